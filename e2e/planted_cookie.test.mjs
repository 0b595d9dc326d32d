// A session cookie planted by another host of the same site, in headless Chromium over https.
// A page on evil.example.test can set `tollgate=…; Domain=example.test` for the whole site,
// with the value of the attacker's own session cookie (the attacker signed in as bob in a
// browser of their own). Tollgate serves app.example.test over https as the reverse proxy,
// with a `__Host-` cookie binding each session cookie to the browser it was set in: the
// visitor's browser must not be signed in as bob, and when the visitor signs in as alice the
// planted cookie, sent first, must not shadow her session — she gets a page saying what to do.
// Any Content-Security-Policy violation or browser error page fails the test.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpsRequest, createServer as createHttpsServer } from 'node:https';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, start, tempDir, tollgateBinary, waitForHttp, write } from './lib.mjs';
import { logIn, startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';

const ports = {};
let provider;
let upstream;
let tollgate;
let evil;
let browser;
let app;

/** Waits until Tollgate answers `/ping` over https as app.example.test (its certificate). */
async function waitForHttps(port, cert, server) {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    if (server.exited) throw new Error(`Tollgate exited:\n${server.output}`);
    const status = await new Promise((resolve) => {
      const asked = httpsRequest({
        host: '127.0.0.1', port, path: '/ping', servername: 'app.example.test', ca: cert,
        headers: { host: `app.example.test:${port}` },
      }, (answer) => { answer.resume(); resolve(answer.statusCode); });
      asked.on('error', () => resolve(null));
      asked.end();
    });
    if (status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Tollgate never answered over https:\n${server.output}`);
}

before(async () => {
  requireProgram('/usr/bin/chromium');
  requireProgram('/usr/bin/openssl');
  for (const name of ['provider', 'upstream', 'tollgate', 'admin', 'evil']) ports[name] = await freePort();
  app = `https://app.example.test:${ports.tollgate}`;
  const dir = tempDir('planted');
  execFileSync('/usr/bin/openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=app.example.test',
    '-addext', 'subjectAltName=DNS:app.example.test,DNS:evil.example.test',
    '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`,
  ], { stdio: 'ignore' });
  const [cert, key] = [readFileSync(`${dir}/cert.pem`), readFileSync(`${dir}/key.pem`)];
  provider = await startProvider({
    port: ports.provider,
    redirectUris: [`${app}/callback`],
    postLogoutRedirectUris: [`${app}/`],
  });
  upstream = await startUpstream(ports.upstream);
  const config = write(dir, 'tollgate.toml', `[server]
listen = "127.0.0.1:${ports.tollgate}"
admin_listen = "127.0.0.1:${ports.admin}"
public_url = "${app}"
tls_cert_file = "${dir}/cert.pem"
tls_key_file = "${dir}/key.pem"

[session]
store = "memory"
secrets = ["e2e-planted-session-secret-e2e-planted-session"]

[[provider]]
name = "op"
issuer = "${provider.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile", "groups"]

[[route]]
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
[route.headers]
"X-User" = "claim:email"
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('TOLLGATE_')));
  tollgate = start('tollgate-planted', tollgateBinary(), ['serve', '--config', config], { env });
  await waitForHttp(`http://127.0.0.1:${ports.admin}/healthz`, tollgate);
  await waitForHttps(ports.tollgate, cert, tollgate);
  // The other host of the site: a page whose script plants the cookie its query names.
  evil = createHttpsServer({ cert, key }, (request, response) => {
    const value = new URL(request.url, 'https://evil.example.test').searchParams.get('value') ?? '';
    response.setHeader('content-type', 'text/html');
    response.end(`<!doctype html><title>evil</title><script>
document.cookie = ${JSON.stringify(`tollgate=${value}; Domain=example.test; Path=/; Secure; SameSite=Lax; Max-Age=3600`)};
document.title = document.cookie.includes('tollgate=') ? 'planted' : 'refused';
</script>`);
  });
  await new Promise((resolve) => evil.listen(ports.evil, '127.0.0.1', resolve));
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...chromiumArgs, '--host-resolver-rules=MAP *.example.test 127.0.0.1'],
    headless: true,
  });
});

after(async () => {
  await browser?.close();
  await tollgate?.stop();
  await new Promise((resolve) => (evil ? evil.close(resolve) : resolve()));
  await upstream?.close();
  await provider?.close();
});

/** A page in a context of its own (a browser of its own) that records CSP violations. */
async function ownBrowser() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  return { context, page, problems };
}

function assertClean({ page, problems }) {
  assert.ok(!page.url().startsWith('chrome-error:'), `a browser error page: ${page.url()}`);
  assert.deepEqual(problems, []);
}

test('a session cookie another host of the site planted signs no one in', async () => {
  // The attacker signs in as bob, in a browser of their own, and copies the session cookie.
  const attacker = await ownBrowser();
  await attacker.page.goto(`${app}/`);
  await logIn(attacker.page, app, 'bob');
  const seenByBob = JSON.parse(await attacker.page.locator('body').innerText());
  assert.equal(seenByBob.headers['x-user'], 'bob@example.com');
  const cookies = await attacker.context.cookies(app);
  const session = cookies.find((cookie) => cookie.name === 'tollgate');
  const binding = cookies.find((cookie) => cookie.name === '__Host-tollgate_bind');
  assert.ok(session, JSON.stringify(cookies));
  assert.ok(binding?.secure && binding.path === '/' && binding.domain === 'app.example.test', JSON.stringify(binding));
  assert.equal(binding.httpOnly, true);
  assertClean(attacker);

  // The visitor opens the attacker's page, which plants bob's cookie for the whole site.
  const visitor = await ownBrowser();
  await visitor.page.goto(`https://evil.example.test:${ports.evil}/?value=${encodeURIComponent(session.value)}`);
  assert.equal(await visitor.page.title(), 'planted', 'Chromium took the cookie for the whole site');
  const planted = (await visitor.context.cookies(app)).find((cookie) => cookie.name === 'tollgate');
  assert.equal(planted?.domain, '.example.test', 'the browser sends it to app.example.test');
  assert.equal(planted.value, session.value, "the attacker's own session cookie");

  // At the application the visitor is not bob: Tollgate sends them to sign in.
  await visitor.page.goto(`${app}/`);
  assert.ok(visitor.page.url().startsWith(provider.issuer), `not sent to sign in: ${visitor.page.url()}`);
  assertClean(visitor);

  // Signed in as alice, the planted cookie (older, so sent first) shadows nothing: a page
  // says to clear the site's cookies instead of a sign-in loop or bob's session.
  const answers = [];
  visitor.page.on('response', (response) => answers.push([response.url(), response.status()]));
  await logIn(visitor.page, app, 'alice');
  const text = await visitor.page.locator('body').innerText();
  assert.ok(!text.includes('bob@example.com'), text);
  assert.match(text, /two session cookies/);
  assert.equal(answers.at(-1)?.[1], 400, JSON.stringify(answers));
  assertClean(visitor);

  // Once the site's cookies are cleared, alice signs in and is alice.
  await visitor.context.clearCookies();
  await visitor.page.goto(`${app}/`);
  await logIn(visitor.page, app, 'alice');
  const seenByAlice = JSON.parse(await visitor.page.locator('body').innerText());
  assert.equal(seenByAlice.headers['x-user'], 'alice@example.com');
  assertClean(visitor);
  await attacker.context.close();
  await visitor.context.close();
});
