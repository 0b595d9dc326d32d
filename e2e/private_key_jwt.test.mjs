// SPEC §3 `client_auth = "private_key_jwt"` end to end: the npm oidc-provider registers
// Tollgate's public key (`jwks`) and requires RFC 7523 client assertions signed with one
// algorithm; Chromium logs in through Tollgate's proxy, the session is refreshed, and an opaque
// access token is introspected, for an RSA key signing RS256, an RSA key signing PS256 and a
// P-256 key signing ES256 (keys made here with node's crypto). A key the provider does not know
// gets a clear 502 at the callback naming Tollgate's own credentials (the provider's
// `invalid_client`), and no session; a key of no algorithm the provider lists
// gets no request sent and a 502. `client_assertion_audience` is tested both ways, and an
// openssl certificate beside the PS256 key gives the `x5t#S256` header.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, generateKeyPairSync } from 'node:crypto';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, start, tempDir, tollgateBinary, waitForTollgate, write } from './lib.mjs';
import { until } from './cluster.mjs';
import { logIn, startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';

/**
 * Waits for `pattern` in what `process` wrote: log lines go through Tollgate's queue and its
 * writer thread (which gathers lines for up to 1 ms), so one may reach standard error a moment
 * after the answer it belongs to. Asked again at most 100 times.
 */
async function logged(process, pattern) {
  await until(`the log line ${pattern}`, () => pattern.test(process.output), 100, 50);
  assert.match(process.output, pattern);
}

let browser;

before(async () => {
  requireProgram('/usr/bin/chromium');
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
});

/** A fresh key pair: the private key as PEM (in `pemType`) and the public key as a JWK. */
function keyPair(type, pemType) {
  const { privateKey, publicKey } = type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    pem: privateKey.export({ format: 'pem', type: pemType }),
    jwk: publicKey.export({ format: 'jwk' }),
  };
}

/**
 * A self-signed certificate of `key` made by openssl, appended to its PEM (what Entra ID's
 * recipe does), and its SHA-256 thumbprint (`x5t#S256`) computed here.
 */
function withCertificate(key) {
  const dir = tempDir('pkjwt-certificate');
  const keyFile = write(dir, 'key.pem', key.pem);
  const certificate = execFileSync(requireProgram('/usr/bin/openssl'),
    ['req', '-new', '-x509', '-key', keyFile, '-subj', '/CN=tollgate', '-days', '1'], { encoding: 'utf8' });
  const thumbprint = createHash('sha256').update(new X509Certificate(certificate).raw).digest('base64url');
  return { ...key, pem: `${key.pem}${certificate}`, thumbprint };
}

/**
 * One oidc-provider whose `tollgate` client authenticates with `private_key_jwt` signed with
 * `alg` by the key whose public half is `registered`, and one Tollgate signing with
 * `configured` (its PEM) as `kid`, proxying to an upstream that echoes its headers.
 */
async function startPair({ name, alg, registered, configured, kid, clientAuthSigningAlgValues, audience = 'issuer' }) {
  const ports = {};
  for (const part of ['provider', 'upstream', 'tollgate', 'admin']) ports[part] = await freePort();
  const origin = `http://127.0.0.1:${ports.tollgate}`;
  const provider = await startProvider({
    port: ports.provider,
    redirectUris: [`${origin}/callback`],
    postLogoutRedirectUris: [`${origin}/`],
    // Shorter than refresh_before: every request after the login refreshes the session.
    accessTokenSeconds: 30,
    client: {
      client_secret: undefined,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: alg,
      jwks: { keys: [{ ...registered, kid, use: 'sig' }] },
    },
    clientAuthSigningAlgValues,
    introspection: true,
  });
  const upstream = await startUpstream(ports.upstream);
  const dir = tempDir(`pkjwt-${name}`);
  const keyFile = write(dir, 'tollgate-client.pem', configured);
  const config = write(dir, 'tollgate.toml', `[server]
listen = "127.0.0.1:${ports.tollgate}"
admin_listen = "127.0.0.1:${ports.admin}"

[session]
store = "memory"
secrets = ["e2e-pkjwt-session-secret-e2e-pkjwt-session"]
refresh_before = "60s"

[[provider]]
name = "op"
issuer = "${provider.issuer}"
client_id = "tollgate"
client_auth = "private_key_jwt"
client_key_file = "${keyFile}"
client_key_id = "${kid}"
client_assertion_audience = "${audience}"
scopes = ["openid", "email", "profile"]
introspection = true
audiences = ["tollgate"]

[[route]]
path_prefix = "/api"
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
accept_bearer = true
on_unauthenticated = "deny"
[route.headers]
"X-Sub" = "claim:sub"

[[route]]
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
[route.headers]
"X-User" = "claim:email"
"X-Access" = "access_token"
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
  const check = start(`tollgate-check-${name}`, tollgateBinary(), ['check', '--config', config], { env });
  await new Promise((resolve) => check.child.once('exit', resolve));
  assert.equal(check.exited?.code, 0, `tollgate check accepts the config:\n${check.output}`);
  const tollgate = start(`tollgate-${name}`, tollgateBinary(), ['serve', '--config', config], { env });
  await waitForTollgate(`http://127.0.0.1:${ports.admin}`, origin, tollgate);
  return {
    origin,
    provider,
    tollgate,
    async close() {
      await tollgate.stop();
      await upstream.close();
      await provider.close();
    },
  };
}

/**
 * What every assertion must be (RFC 7523 §3), whichever endpoint it went to: `aud` is the
 * issuer, or with `client_assertion_audience = "token_endpoint"` the endpoint's URL.
 */
function checkAssertion(pair, { header, claims, path }, alg, kid, audience, thumbprint) {
  assert.deepEqual(header, { alg, typ: 'JWT', kid, ...(thumbprint ? { 'x5t#S256': thumbprint } : {}) });
  assert.equal(claims.iss, 'tollgate');
  assert.equal(claims.sub, 'tollgate');
  assert.equal(claims.aud, audience === 'issuer' ? pair.provider.issuer : `${pair.provider.issuer}${path}`);
  assert.equal(typeof claims.jti, 'string');
  assert.ok(claims.exp > claims.iat && claims.exp - claims.iat <= 60, `short-lived: ${JSON.stringify(claims)}`);
}

const cases = [
  // An RSA key where discovery lists RS256 but not PS256: RS256.
  { name: 'rs256', alg: 'RS256', type: 'rsa', pemType: 'pkcs1', clientAuthSigningAlgValues: ['RS256', 'ES256'] },
  // An RSA key where discovery lists PS256 (oidc-provider's default list): PS256; its
  // certificate in the key file gives `x5t#S256`.
  { name: 'ps256', alg: 'PS256', type: 'rsa', pemType: 'pkcs8', certificate: true },
  // A P-256 key in SEC 1 form: ES256; `aud` the endpoint's URL.
  { name: 'es256', alg: 'ES256', type: 'ec', pemType: 'sec1', audience: 'token_endpoint' },
];

for (const { name, alg, type, pemType, clientAuthSigningAlgValues, audience = 'issuer', certificate = false } of cases) {
  describe(`private_key_jwt with ${alg}`, () => {
    let pair;
    let thumbprint;
    const kid = `tollgate-${name}`;

    before(async () => {
      const key = certificate ? withCertificate(keyPair(type, pemType)) : keyPair(type, pemType);
      ({ thumbprint } = key);
      pair = await startPair({ name, alg, registered: key.jwk, configured: key.pem, kid, clientAuthSigningAlgValues, audience });
    });

    after(async () => {
      await pair?.close();
    });

    test(`login, refresh and introspection authenticate with ${alg} assertions (aud: ${audience})`, async () => {
      const { origin, provider } = pair;
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${origin}/app/first`);
      assert.ok(page.url().startsWith(provider.issuer), `an anonymous visit goes to the provider, not ${page.url()}`);
      await logIn(page, origin, 'dana');
      assert.equal(new URL(page.url()).pathname, '/app/first');
      assert.equal(JSON.parse(await page.locator('body').innerText()).headers['x-user'], 'dana@example.com');
      await page.goto(`${origin}/app/again`);
      const seen = JSON.parse(await page.locator('body').innerText());
      assert.equal(seen.headers['x-user'], 'dana@example.com', 'still signed in after refreshes');

      const grants = provider.grants.map(({ type: grant, ok }) => ({ grant, ok }));
      assert.deepEqual(grants.slice(0, 2), [{ grant: 'authorization_code', ok: true }, { grant: 'refresh_token', ok: true }],
        `the code exchange and a refresh succeeded: ${JSON.stringify(provider.grants)}`);
      assert.ok(grants.every(({ ok }) => ok), JSON.stringify(provider.grants));

      // The session's opaque access token as a bearer token: Tollgate introspects it.
      const accessToken = seen.headers['x-access'];
      assert.ok(accessToken && accessToken.split('.').length !== 3, `an opaque access token: ${accessToken}`);
      const api = await fetch(`${origin}/api/data`, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' } });
      const apiBody = await api.text();
      assert.equal(api.status, 200, apiBody);
      assert.equal(JSON.parse(apiBody).headers['x-sub'], 'dana');

      const byPath = (path) => provider.assertions.filter((entry) => entry.path === path);
      const tokenCalls = byPath('/token');
      const introspections = byPath('/token/introspection');
      assert.ok(tokenCalls.length >= 2, `code exchange and refresh: ${tokenCalls.length}`);
      assert.equal(introspections.length, 1, 'one introspection (then cached)');
      assert.equal(introspections[0].status, 200);
      for (const entry of [...tokenCalls, ...introspections]) checkAssertion(pair, entry, alg, kid, audience, thumbprint);
      const jtis = provider.assertions.map((entry) => entry.claims.jti);
      assert.equal(new Set(jtis).size, jtis.length, 'a new jti every time');
      for (const { assertion } of provider.assertions) {
        assert.ok(!pair.tollgate.output.includes(assertion.split('.')[2]), 'no assertion in the log');
      }
      await context.close();
    });
  });
}

describe('private_key_jwt with a key the provider does not know', () => {
  let pair;

  before(async () => {
    const registered = keyPair('ec', 'pkcs8');
    const configured = keyPair('ec', 'pkcs8');
    pair = await startPair({ name: 'wrong', alg: 'ES256', registered: registered.jwk, configured: configured.pem, kid: 'tollgate-wrong' });
  });

  after(async () => {
    await pair?.close();
  });

  test('the provider refuses the assertion; Tollgate answers 502 at the callback, naming its own credentials, and keeps no session', async () => {
    const { origin, provider } = pair;
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/app/first`);
    const callback = page.waitForResponse((response) => new URL(response.url()).pathname === '/callback');
    await logIn(page, origin, 'erin');
    const answer = await callback;
    // Tollgate's own client authentication refused: the provider failing it, not the user's
    // login refused.
    assert.equal(answer.status(), 502);
    assert.equal(new URL(page.url()).pathname, '/callback');
    const text = await page.locator('body').innerText();
    assert.ok(!text.includes('erin@example.com'), 'no upstream page');

    assert.deepEqual(provider.grants.map(({ type, ok }) => ({ type, ok })), [{ type: 'authorization_code', ok: false }]);
    assert.equal(provider.assertions.length, 1);
    assert.equal(provider.assertions[0].status, 401, 'invalid_client');
    await logged(pair.tollgate, /refused Tollgate's client authentication \(check client_id, client_secret or the client key\): the token endpoint answered invalid_client/);
    assert.ok(!pair.tollgate.output.includes(provider.assertions[0].assertion.split('.')[2]), 'no assertion in the log');

    const again = await context.request.get(`${origin}/app/first`, { maxRedirects: 0 });
    assert.equal(again.status(), 302, 'still no session: back to the login');
    assert.ok((again.headers().location ?? '').startsWith(provider.issuer));
    await context.close();
  });
});

describe('private_key_jwt with a key of no algorithm the provider lists', () => {
  let pair;

  before(async () => {
    const key = keyPair('rsa', 'pkcs8');
    pair = await startPair({
      name: 'no-alg', alg: 'ES256', registered: key.jwk, configured: key.pem, kid: 'tollgate-rsa', clientAuthSigningAlgValues: ['ES256'],
    });
  });

  after(async () => {
    await pair?.close();
  });

  test('an RSA key where discovery lists only ES256: no request is sent, the callback answers 502 saying why', async () => {
    const { origin, provider } = pair;
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/app/first`);
    const callback = page.waitForResponse((response) => new URL(response.url()).pathname === '/callback');
    await logIn(page, origin, 'finn');
    assert.equal((await callback).status(), 502);
    assert.deepEqual(provider.grants, [], 'the token endpoint was not called');
    assert.deepEqual(provider.assertions, []);
    await logged(pair.tollgate, /the provider accepts client assertions signed with ES256, none of this key's PS256, RS256/);
    await context.close();
  });
});
