// `tollgate demo` as a new user meets it (SPEC §2, §10): the printed URL and passwords are read
// from its output, then headless Chromium signs in, sees the app with the user's name, signs
// out, lands on Tollgate's signed-out page, and is refused with a wrong password. Any browser
// error page or Content-Security-Policy violation fails the test; each page is screenshotted
// to e2e/screenshots/ (the README shows some of them: scripts/screenshots.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, root, start, tempDir, tollgateBinary, waitForTollgate, write } from './lib.mjs';

let demo;
let browser;
let printed;
const screenshots = join(root, 'e2e', 'screenshots');

/** Waits until the demo has printed its users, then reads the URL and passwords from it. */
async function readOutput(server) {
  for (let attempt = 0; attempt < 400; attempt += 1) {
    if (server.exited) throw new Error(`the demo exited: ${server.output}`);
    if (server.output.includes('Press Ctrl-C')) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const url = server.output.match(/Open the demo app: +(http:\/\/\S+)/)?.[1];
  const proxied = server.output.match(/behind Tollgate's reverse proxy: +(http:\/\/\S+)/)?.[1];
  const passwords = Object.fromEntries(
    [...server.output.matchAll(/^ {4}(alice|bob) +(\S+)$/gm)].map((match) => [match[1], match[2]]),
  );
  assert.ok(url, `the demo prints the URL to open:\n${server.output}`);
  assert.ok(proxied, `the demo prints the reverse proxy's URL:\n${server.output}`);
  assert.ok(passwords.alice && passwords.bob, `the demo prints both passwords:\n${server.output}`);
  return { url, proxied, passwords };
}

before(async () => {
  requireProgram('/usr/bin/chromium');
  mkdirSync(screenshots, { recursive: true });
  const [listen, app, admin] = [await freePort(), await freePort(), await freePort()];
  demo = start('demo', tollgateBinary(), [
    'demo', '--listen', `127.0.0.1:${listen}`, '--app-listen', `127.0.0.1:${app}`,
    '--admin-listen', `127.0.0.1:${admin}`,
  ]);
  printed = await readOutput(demo);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

/** A page that records CSP violations and browser error pages, for `assertClean`. */
async function watchedPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame() && frame.url().startsWith('chrome-error://')) {
      problems.push(`browser error page after ${frame.url()}`);
    }
  });
  return { context, page, problems };
}

function assertClean({ page, problems }, what) {
  assert.deepEqual(problems, [], `${what}: ${problems.join('; ')}`);
  assert.ok(!page.url().startsWith('chrome-error://'), `${what}: a browser error page`);
}

async function signIn(page, username, password) {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
}

test('the demo: sign in, see the app with the user name, sign out, sign in as the other user', async () => {
  const watched = await watchedPage();
  const { page } = watched;
  await page.goto(printed.url);
  await page.waitForSelector('input[name=password]');
  assertClean(watched, 'the login form');
  await page.screenshot({ path: join(screenshots, 'login.png') });

  await signIn(page, 'alice', printed.passwords.alice);
  await page.waitForSelector('text=Alice Example');
  assert.equal(new URL(page.url()).origin, new URL(printed.url).origin, 'back at the demo app');
  assertClean(watched, 'signing in');
  await page.screenshot({ path: join(screenshots, 'app.png') });

  // The second way: the same app behind the reverse proxy, with the same session.
  await page.goto(printed.proxied);
  await page.waitForSelector('text=reverse proxy');
  assert.ok(await page.isVisible('text=Alice Example'), 'the proxy sent the identity headers');
  assertClean(watched, 'the app behind the proxy');

  await Promise.all([page.waitForNavigation(), page.click('text=Sign out')]);
  await page.waitForSelector('text=signed out');
  assertClean(watched, 'signing out');
  await page.screenshot({ path: join(screenshots, 'signed-out.png') });

  // Signing in again starts from the proxied app this time: the proxy logs the browser in.
  await page.goto(printed.proxied);
  await page.waitForSelector('input[name=password]');
  await signIn(page, 'bob', printed.passwords.bob);
  await page.waitForSelector('text=Bob Example');
  assert.equal(new URL(page.url()).pathname, '/app/', 'back at the proxied app');
  assertClean(watched, 'signing in as the other user');
  await watched.context.close();
});

test('the demo: a wrong password is refused and the page says why', async () => {
  const watched = await watchedPage();
  const { page } = watched;
  await page.goto(printed.url);
  await page.waitForSelector('input[name=password]');
  await signIn(page, 'alice', 'not-the-password');
  await page.waitForSelector('text=Wrong username or password');
  assert.ok(await page.isVisible('input[name=password]'), 'the form is shown again');
  assertClean(watched, 'a wrong password');
  await page.screenshot({ path: join(screenshots, 'wrong-password.png') });
  await watched.context.close();
});

test('every page a person may see is a page, with its reason, and no CSP violation', async () => {
  const watched = await watchedPage();
  const { page } = watched;
  await page.goto(printed.url);
  await page.waitForSelector('input[name=password]');
  await signIn(page, 'bob', printed.passwords.bob);
  await page.waitForSelector('text=Bob Example');
  const tollgate = new URL(printed.proxied).origin;

  const pages = [
    ['refused', `${tollgate}/auth?groups=admin`, 403, 'Access refused', 'groups'],
    ['bad-request', `${tollgate}/signin?rd=${encodeURIComponent('https://evil.example/')}`, 400, 'Bad request', 'rd'],
    ['not-found', `${tollgate}/no/such/page`, 404, 'Page not found', 'nothing at this address'],
    ['method-not-allowed', `${tollgate}/token`, 405, 'Method not allowed', 'does not answer GET'],
    ['landing-signed-in', `${tollgate}/`, 200, 'You are signed in', 'Sign out'],
  ];
  for (const [name, url, status, title, reason] of pages) {
    const response = await page.goto(url);
    assert.equal(response.status(), status, name);
    assert.equal(await page.locator('h1').innerText({ timeout: 5000 }).catch(async () => `no h1 in ${await page.content()}`), title, name);
    assert.ok((await page.locator('main').innerText()).includes(reason), `${name} says why`);
    assert.match(response.headers()['content-security-policy'], /default-src 'none'/, name);
    assert.equal(response.headers()['x-content-type-options'], 'nosniff', name);
    assertClean(watched, name);
    await page.screenshot({ path: join(screenshots, `${name}.png`) });
  }
  await watched.context.close();
});

test('a sign-out another site asked for is confirmed first, and the button signs out', async () => {
  const watched = await watchedPage();
  const { page, context } = watched;
  await page.goto(printed.url);
  await page.waitForSelector('input[name=password]');
  await signIn(page, 'alice', printed.passwords.alice);
  await page.waitForSelector('text=Alice Example');
  const tollgate = new URL(printed.proxied);
  // Another site: Tollgate's not-found page under the name `localhost`, not 127.0.0.1.
  await page.goto(`http://localhost:${tollgate.port}/another-site`);
  await page.evaluate((target) => {
    const link = document.createElement('a');
    link.href = target;
    link.textContent = 'a link to sign out';
    document.querySelector('main').append(link);
  }, `${tollgate.origin}/signout?rd=/`);
  await Promise.all([page.waitForNavigation(), page.click('text=a link to sign out')]);
  assert.equal(await page.locator('h1').innerText(), 'Sign out?');
  assertClean(watched, 'the sign-out confirmation');
  await page.screenshot({ path: join(screenshots, 'sign-out-confirm.png') });
  const other = await context.newPage();
  await other.goto(`${tollgate.origin}/`);
  assert.equal(await other.locator('h1').innerText(), 'You are signed in', 'nothing changed yet');
  await other.close();
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  await page.waitForSelector('text=signed out');
  assertClean(watched, 'signing out from the confirmation');
  await watched.context.close();
});

test('the provider-unreachable page', async () => {
  const dead = await freePort();
  const [listen, admin] = [await freePort(), await freePort()];
  const dir = tempDir('unreachable');
  const config = write(dir, 'tollgate.toml', `[server]
listen = "127.0.0.1:${listen}"
admin_listen = "127.0.0.1:${admin}"
[session]
secrets = ["an-e2e-session-secret-an-e2e-session-secret"]
[[provider]]
name = "gone"
issuer = "http://127.0.0.1:${dead}"
client_id = "x"
client_auth = "none"
[forward_auth]
provider = "gone"
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
  const server = start('tollgate-unreachable', tollgateBinary(), ['serve', '--config', config], { env });
  try {
    await waitForTollgate(`http://127.0.0.1:${admin}`, `http://127.0.0.1:${listen}`, server);
    const watched = await watchedPage();
    const response = await watched.page.goto(`http://127.0.0.1:${listen}/signin?rd=/`);
    assert.equal(response.status(), 502);
    assert.equal(await watched.page.locator('h1').innerText(), 'The identity provider is unreachable');
    assertClean(watched, 'provider unreachable');
    await watched.page.screenshot({ path: join(screenshots, 'provider-unreachable.png') });
    await watched.context.close();
  } finally {
    await server.stop();
  }
});
