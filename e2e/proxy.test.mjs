// SPEC §5 end to end: Tollgate as the authenticating reverse proxy in front of an upstream,
// with the npm oidc-provider as identity provider (refresh tokens, RP-initiated logout) and
// headless Chromium as the user: login, identity headers, a token refresh, logout, and the
// login that starts only when the upstream answers 401 (seed 000).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, start, tempDir, tollgateBinary, waitForTollgate, write } from './lib.mjs';
import { logIn, startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';

const ports = {};
let provider;
let upstream;
let tollgate;
let browser;
let origin;

before(async () => {
  requireProgram('/usr/bin/chromium');
  for (const name of ['provider', 'upstream', 'tollgate', 'admin']) ports[name] = await freePort();
  origin = `http://127.0.0.1:${ports.tollgate}`;
  provider = await startProvider({
    port: ports.provider,
    redirectUris: [`${origin}/callback`],
    postLogoutRedirectUris: [`${origin}/`],
    // Shorter than refresh_before: the first request after login refreshes.
    accessTokenSeconds: 30,
  });
  upstream = await startUpstream(ports.upstream);
  const dir = tempDir('proxy');
  const config = write(dir, 'tollgate.toml', `[server]
listen = "127.0.0.1:${ports.tollgate}"
admin_listen = "127.0.0.1:${ports.admin}"

[session]
store = "memory"
secrets = ["e2e-proxy-session-secret-e2e-proxy-session"]
refresh_before = "60s"

[[provider]]
name = "op"
issuer = "${provider.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile", "groups"]

[[route]]
path_prefix = "/lazy"
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
on_unauthenticated = "login_on_upstream_401"
[route.headers]
"X-User" = "claim:email"

[[route]]
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
[route.headers]
"X-User" = "claim:email"
"X-Groups" = "json:$.groups[*]"
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
  tollgate = start('tollgate-proxy', tollgateBinary(), ['serve', '--config', config], { env });
  await waitForTollgate(`http://127.0.0.1:${ports.admin}`, `http://127.0.0.1:${ports.tollgate}`, tollgate);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
  await tollgate?.stop();
  await upstream?.close();
  await provider?.close();
});

async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${ports.admin}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('login through the proxy, identity headers, a refresh, logout, refused again', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/app/page?x=1`);
  assert.ok(page.url().startsWith(provider.issuer), `an anonymous visit goes to the provider, not ${page.url()}`);
  await logIn(page, origin, 'bob');
  assert.equal(new URL(page.url()).pathname, '/app/page');
  const seen = JSON.parse(await page.locator('body').innerText());
  assert.equal(seen.headers['x-user'], 'bob@example.com');
  assert.equal(seen.headers['x-groups'], 'staff');
  assert.ok(!(seen.headers.cookie ?? '').includes('tollgate'), 'Tollgate cookies never reach the upstream');
  assert.ok(await metric('tollgate_refreshes_total{result="ok"}') >= 1, 'the short-lived access token was refreshed at the provider');
  await page.goto(`${origin}/app/again`);
  assert.equal(JSON.parse(await page.locator('body').innerText()).headers['x-user'], 'bob@example.com', 'still signed in after the refresh');

  await page.goto(`${origin}/logout?rd=/`);
  assert.ok(page.url().startsWith(provider.issuer), 'logout continues at the provider');
  await Promise.all([page.waitForNavigation(), page.click('button[name=logout][value=yes]')]);
  await page.waitForSelector('input[name=login]');
  assert.ok(page.url().startsWith(provider.issuer), 'after logout the app sends the browser to log in again');
  const refused = await context.request.get(`${origin}/app/page`, { maxRedirects: 0 });
  assert.equal(refused.status(), 302);
  await context.close();
});

test('a logout another site links to asks first; its button goes on to the provider on another origin', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  await page.goto(`${origin}/app/page`);
  await logIn(page, origin, 'dave');
  // Another site: the upstream under the name `localhost`, not 127.0.0.1.
  await page.goto(`http://localhost:${ports.upstream}/elsewhere`);
  await page.evaluate((target) => {
    const link = document.createElement('a');
    link.href = target;
    link.textContent = 'sign out';
    document.body.append(link);
  }, `${origin}/logout?rd=/`);
  await Promise.all([page.waitForNavigation(), page.click('text=sign out')]);
  assert.equal(await page.locator('h1').innerText(), 'Sign out?');
  const still = await context.request.get(`${origin}/app/page`, { maxRedirects: 0 });
  assert.equal(still.status(), 200, 'nothing changed yet');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  assert.ok(page.url().startsWith(provider.issuer), `the button goes on to the provider's logout, not ${page.url()}`);
  assert.deepEqual(problems, [], 'no CSP violation on the way');
  const refused = await context.request.get(`${origin}/app/page`, { maxRedirects: 0 });
  assert.equal(refused.status(), 302, 'signed out');
  await context.close();
});

test('an element posted into an application cannot sign its user out; its script can', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/app/page`);
  await logIn(page, origin, 'frank');
  // Elements that ask in `cors` mode, as HTML posted into the application could hold them.
  await page.evaluate(async () => {
    const done = (element) => new Promise((resolve) => {
      element.onload = resolve;
      element.onerror = resolve;
    });
    const image = document.createElement('img');
    image.crossOrigin = 'anonymous';
    const imageDone = done(image);
    image.src = '/logout';
    document.body.append(image);
    const style = document.createElement('link');
    style.rel = 'stylesheet';
    style.crossOrigin = 'anonymous';
    const styleDone = done(style);
    style.href = '/logout?rd=/';
    document.head.append(style);
    await Promise.all([imageDone, styleDone]);
  });
  const still = await context.request.get(`${origin}/app/page`, { maxRedirects: 0 });
  assert.equal(still.status(), 200, 'still signed in');
  // The application's own script (a single-page application's sign-out).
  await page.evaluate(async () => { await fetch('/logout', { redirect: 'manual' }); });
  const refused = await context.request.get(`${origin}/app/page`, { maxRedirects: 0 });
  assert.equal(refused.status(), 302, 'signed out by the script');
  await context.close();
});

test('login_on_upstream_401: anonymous requests pass, the upstream 401 starts the login', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/lazy/public`);
  assert.equal(new URL(page.url()).pathname, '/lazy/public', 'no login for a page the upstream serves anonymously');
  assert.equal(JSON.parse(await page.locator('body').innerText()).headers['x-user'], undefined);
  await page.goto(`${origin}/lazy/private?tab=2`);
  assert.ok(page.url().startsWith(provider.issuer), 'the upstream said 401: login');
  await logIn(page, origin, 'carol');
  assert.equal(new URL(page.url()).pathname + new URL(page.url()).search, '/lazy/private?tab=2', 'back at the original URL');
  assert.equal(JSON.parse(await page.locator('body').innerText()).headers['x-user'], 'carol@example.com');
  await context.close();
});
