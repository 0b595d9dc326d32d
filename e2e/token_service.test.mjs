// SPEC §7 end to end with a standard client library: the npm openid-client accepts the token
// service's discovery document unchanged, obtains client_credentials tokens (which Tollgate's
// own /auth and /validate accept), completes authorization_code + PKCE for a public client in
// headless Chromium (also with the authorization request sent by POST), refreshes, and revokes.
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, start, tempDir, tollgateBinary, waitForTollgate, write } from './lib.mjs';
import { logIn, startProvider } from './provider.mjs';

const ports = {};
let tollgate;
let browser;
let callbackServer;
let issuer;
const upstreams = {};
let postAuthorizePage = '';

function hash(secret) {
  return execFileSync(tollgateBinary(), ['hash-secret'], { input: `${secret}\n` }).toString().trim();
}

before(async () => {
  requireProgram('/usr/bin/chromium');
  for (const name of ['tollgate', 'admin', 'callback', 'corp', 'partner']) ports[name] = await freePort();
  issuer = `http://127.0.0.1:${ports.tollgate}`;
  // Two upstream identity providers with different issuers, federated behind one token service.
  for (const name of ['corp', 'partner']) {
    upstreams[name] = await startProvider({ port: ports[name], redirectUris: [`${issuer}/callback`], postLogoutRedirectUris: [`${issuer}/`] });
  }
  // Where the public client's browser comes back to; the test reads the URL from the browser.
  // `/hop` redirects on to a third origin (`localhost` is another origin than `127.0.0.1`), as
  // single-page apps' callbacks often do.
  callbackServer = createServer((request, response) => {
    if (request.url.startsWith('/hop')) {
      response.writeHead(302, { location: `http://localhost:${ports.callback}/landed` });
      response.end();
      return;
    }
    if (request.url.startsWith('/post-authorize')) {
      // A client's page that sends its authorization request by POST (OpenID Connect Core
      // §3.1.2.1), as a form it submits itself.
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(postAuthorizePage);
      return;
    }
    response.end(request.url.startsWith('/landed') ? 'landed on the third origin' : 'back at the client');
  });
  await new Promise((resolve) => callbackServer.listen(ports.callback, '127.0.0.1', resolve));
  const dir = tempDir('token-service');
  const config = write(dir, 'tollgate.toml', `[server]
listen = "127.0.0.1:${ports.tollgate}"
admin_listen = "127.0.0.1:${ports.admin}"

[session]
secrets = ["e2e-token-service-secret-e2e-token-service"]

[[provider]]
name = "self"
issuer = "${issuer}"
client_id = "spa"
client_auth = "none"
audiences = ["odj"]

[forward_auth]
provider = "self"

[[provider]]
name = "corp"
issuer = "${upstreams.corp.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile"]

[[provider]]
name = "partner"
issuer = "${upstreams.partner.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile"]

[token_service]
issuer = "${issuer}"
signing_key_file = "${dir}/issuer-key.pem"

[[token_service.client]]
client_id = "scim-idp"
client_secret_hash = "${hash('scim-secret')}"
grants = ["client_credentials"]
scopes = ["scim"]
source = "myapi"
audience = "odj"
extra_claims = { api_product_list = ["odj-core"] }

[[token_service.client]]
client_id = "spa"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["http://127.0.0.1:${ports.callback}/cb", "http://127.0.0.1:${ports.callback}/hop", "${issuer}/callback"]
source = "local"
audience = "odj"

[[token_service.client]]
client_id = "corp-app"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["http://127.0.0.1:${ports.callback}/cb"]
login_provider = "corp"
source = "aad"
audience = "odj"

[[token_service.client]]
client_id = "partner-app"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:${ports.callback}/cb"]
login_provider = "partner"
source = "partner"
audience = "odj"

[[token_service.user]]
username = "alice"
password_hash = "${hash('alice-password')}"
name = "Alice"
email = "alice@example.com"
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
  tollgate = start('tollgate-token-service', tollgateBinary(), ['serve', '--config', config], { env });
  await waitForTollgate(`http://127.0.0.1:${ports.admin}`, `http://127.0.0.1:${ports.tollgate}`, tollgate);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
  await tollgate?.stop();
  await new Promise((resolve) => callbackServer?.close(resolve));
  for (const upstream of Object.values(upstreams)) await upstream.close();
});

const insecure = { execute: [client.allowInsecureRequests] };

/** A public client's configuration and an authorization request for it: PKCE, a fresh state. */
async function authorization(clientId, redirect, scope = 'openid email') {
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), insecure);
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirect,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
  });
  return { config, verifier, state, url };
}

/** Signs in as alice on the token service's login form that `page` shows. */
async function signInAsAlice(page, landing) {
  await page.fill('input[name=username]', 'alice');
  await page.fill('input[name=password]', 'alice-password');
  await Promise.all([page.waitForURL(landing), page.click('button[type=submit]')]);
}

test('client_credentials through openid-client; /auth and /validate accept the token', async () => {
  const config = await client.discovery(new URL(issuer), 'scim-idp', 'scim-secret', undefined, insecure);
  assert.equal(config.serverMetadata().issuer, issuer);
  const tokens = await client.clientCredentialsGrant(config, { scope: 'scim' });
  const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.sub, 'myapi:scim-idp');
  assert.equal(claims.aud, 'odj');
  assert.deepEqual(claims.api_product_list, ['odj-core']);
  const headers = { authorization: `Bearer ${tokens.access_token}` };
  assert.equal((await fetch(`${issuer}/validate`, { headers })).status, 200);
  assert.equal((await fetch(`${issuer}/auth?inject-claim=sub`, { headers })).headers.get('sub'), 'myapi:scim-idp');
  await assert.rejects(client.clientCredentialsGrant(config, { scope: 'admin' }), (error) => error.error === 'invalid_scope');
});

test('authorization_code + PKCE in Chromium, then refresh and revoke through openid-client', async () => {
  const redirect = `http://127.0.0.1:${ports.callback}/cb`;
  const { config, verifier, state, url } = await authorization('spa', redirect);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url.href);
  await signInAsAlice(page, `${redirect}**`);
  const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state });
  assert.equal(tokens.claims().sub, 'local:alice');
  assert.equal(tokens.claims().email, 'alice@example.com');
  assert.ok(tokens.refresh_token);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'rotated');
  assert.equal((await fetch(`${issuer}/userinfo`, { headers: { authorization: `Bearer ${refreshed.access_token}` } })).status, 200);
  await client.tokenRevocation(config, refreshed.refresh_token);
  await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token), (error) => error.error === 'invalid_grant');
  await context.close();
});

test('the login form lets the redirect chain go on to a third origin in Chromium', async () => {
  const { url } = await authorization('spa', `http://127.0.0.1:${ports.callback}/hop`, 'openid');
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  await page.goto(url.href);
  await signInAsAlice(page, `http://localhost:${ports.callback}/landed`);
  assert.equal(await page.locator('body').innerText(), 'landed on the third origin');
  assert.deepEqual(problems, [], 'no CSP violation on the way');
  await context.close();
});

test('an authorization request sent by POST from the client\'s page: the login form, then the code, in Chromium', async () => {
  const redirect = `http://127.0.0.1:${ports.callback}/cb`;
  const { config, verifier, state, url } = await authorization('spa', redirect);
  const attribute = (text) => text.replaceAll('&', '&amp;').replaceAll('"', '&quot;').replaceAll('<', '&lt;');
  const fields = [...url.searchParams].map(([name, value]) => `<input type="hidden" name="${attribute(name)}" value="${attribute(value)}">`).join('');
  postAuthorizePage = `<!doctype html><form method="post" action="${issuer}/authorize">${fields}</form><script>document.forms[0].submit()</script>`;
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  await page.goto(`http://127.0.0.1:${ports.callback}/post-authorize`);
  await page.waitForSelector('input[name=password]');
  assert.equal(new URL(page.url()).origin, issuer, 'the login form is the token service\'s page');
  await signInAsAlice(page, `${redirect}**`);
  const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state });
  assert.equal(tokens.claims().sub, 'local:alice');
  const userinfo = await fetch(`${issuer}/userinfo`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(userinfo.status, 200, 'the UserInfo endpoint takes POST too');
  assert.equal((await userinfo.json()).sub, 'local:alice');
  assert.deepEqual(problems, [], 'no CSP violation on the way');
  await context.close();
});

test('federation: users of two upstream oidc-provider instances get tokens of one issuer', async () => {
  for (const [clientId, upstream, source, login] of [['corp-app', 'corp', 'aad', 'dana'], ['partner-app', 'partner', 'partner', 'erin']]) {
    const redirect = `http://127.0.0.1:${ports.callback}/cb`;
    const { config, verifier, state, url } = await authorization(clientId, redirect);
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(url.href);
    assert.ok(page.url().startsWith(upstreams[upstream].issuer), `${clientId} logs in at ${upstream}, not ${page.url()}`);
    await logIn(page, redirect, login);
    const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(tokens.claims().iss, issuer, 'one issuer');
    assert.equal(tokens.claims().sub, `${source}:${login}`, 'sub says where the identity came from');
    assert.equal(tokens.claims().email, `${login}@example.com`, 'email carried over');
    const access = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'));
    assert.equal(access.sub, `${source}:${login}`);
    assert.equal((await fetch(`${issuer}/validate`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 200);
    await context.close();
  }
});
