// SPEC §4 end to end: a real browser logs in at a real OpenID Provider through Tollgate's
// forward-auth, behind Debian's nginx (configured the way ingress-nginx configures auth-url and
// auth-signin) and behind Debian's Caddy (forward_auth, Tollgate in redirect mode); the
// upstream receives the injected identity headers; after sign-out the browser is refused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, start, tempDir, tollgateBinary, waitForHttp, waitForTollgate, write } from './lib.mjs';
import { logIn, startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';

const SESSION_SECRET = 'e2e-session-secret-e2e-session-secret-0';
const INJECT = 'inject-claim=email,X-Auth-Email&inject-claim=groups,X-Auth-Groups';

const ports = {};
const running = [];
let provider;
let upstream;
let browser;

function tollgateConfig(name, port, adminPort, unauthenticated) {
  return `[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${adminPort}"

[session]
secrets = ["${SESSION_SECRET}-${name}"]

[[provider]]
name = "op"
issuer = "${provider.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile", "groups"]

[forward_auth]
provider = "op"
unauthenticated = "${unauthenticated}"
`;
}

function nginxConfig(dir) {
  return `worker_processes 1;
user root;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${ports.nginx};
    # What ingress-nginx generates for nginx.ingress.kubernetes.io/auth-url.
    location = /_external-auth {
      internal;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Auth-Request-Redirect $request_uri;
      proxy_set_header X-Sent-From "nginx-ingress-controller";
      proxy_http_version 1.1;
      set $target http://127.0.0.1:${ports.tollgateNginx}/auth?${INJECT};
      proxy_pass $target;
    }
    # Tollgate's login endpoints on the application's host, so the session cookie is its own.
    location ~ ^/(signin|callback|signout)$ {
      proxy_set_header Host $http_host;
      proxy_pass http://127.0.0.1:${ports.tollgateNginx};
    }
    location / {
      auth_request /_external-auth;
      auth_request_set $auth_email $upstream_http_x_auth_email;
      auth_request_set $auth_groups $upstream_http_x_auth_groups;
      proxy_set_header X-Auth-Email $auth_email;
      proxy_set_header X-Auth-Groups $auth_groups;
      # nginx.ingress.kubernetes.io/auth-signin
      error_page 401 = @signin;
      proxy_pass http://127.0.0.1:${ports.upstream};
    }
    location @signin {
      return 302 $scheme://$http_host/signin?rd=$scheme://$http_host$request_uri;
    }
  }
}
`;
}

function caddyConfig() {
  return `{
  admin off
  auto_https off
}
http://127.0.0.1:${ports.caddy} {
  @tollgate path /signin /callback /signout
  handle @tollgate {
    reverse_proxy 127.0.0.1:${ports.tollgateCaddy}
  }
  handle {
    route {
      request_header -X-Auth-Email
      request_header -X-Auth-Groups
      request_header -X-Forwarded-User
      request_header -X-Auth-Request-*
      request_header -Remote-*
      forward_auth 127.0.0.1:${ports.tollgateCaddy} {
        uri /auth?skip-auth=^/public/&${INJECT}
        copy_headers X-Auth-Email X-Auth-Groups
      }
      reverse_proxy 127.0.0.1:${ports.upstream}
    }
  }
}
http://127.0.0.1:${ports.caddyBare} {
  route {
    forward_auth 127.0.0.1:${ports.tollgateCaddy} {
      uri /auth
    }
    reverse_proxy 127.0.0.1:${ports.upstream}
  }
}
`;
}

before(async () => {
  requireProgram('/usr/sbin/nginx');
  requireProgram('/usr/bin/caddy');
  requireProgram('/usr/bin/chromium');
  for (const name of ['provider', 'upstream', 'nginx', 'caddy', 'caddyBare', 'tollgateNginx', 'tollgateNginxAdmin', 'tollgateCaddy', 'tollgateCaddyAdmin']) {
    ports[name] = await freePort();
  }
  const nginxOrigin = `http://127.0.0.1:${ports.nginx}`;
  const caddyOrigin = `http://127.0.0.1:${ports.caddy}`;
  provider = await startProvider({
    port: ports.provider,
    redirectUris: [`${nginxOrigin}/callback`, `${caddyOrigin}/callback`],
    postLogoutRedirectUris: [`${nginxOrigin}/`, `${caddyOrigin}/`],
  });
  upstream = await startUpstream(ports.upstream);
  const binary = tollgateBinary();
  for (const [name, port, admin, mode] of [
    ['nginx', ports.tollgateNginx, ports.tollgateNginxAdmin, 'status'],
    ['caddy', ports.tollgateCaddy, ports.tollgateCaddyAdmin, 'redirect'],
  ]) {
    const dir = tempDir(`tollgate-${name}`);
    const config = write(dir, 'tollgate.toml', tollgateConfig(name, port, admin, mode));
    // Only this test's settings: a TOLLGATE_… variable of the caller would be a config override.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
    const tollgate = start(`tollgate-${name}`, binary, ['serve', '--config', config], { env });
    running.push(tollgate);
    await waitForTollgate(`http://127.0.0.1:${admin}`, `http://127.0.0.1:${port}`, tollgate);
  }
  const nginxDir = tempDir('nginx');
  const nginx = start('nginx', '/usr/sbin/nginx', ['-p', nginxDir, '-c', write(nginxDir, 'nginx.conf', nginxConfig(nginxDir))]);
  running.push(nginx);
  await waitForHttp(`${nginxOrigin}/signin`, nginx);
  const caddyDir = tempDir('caddy');
  const caddy = start('caddy', '/usr/bin/caddy', ['run', '--adapter', 'caddyfile', '--config', write(caddyDir, 'Caddyfile', caddyConfig())], {
    env: { ...process.env, HOME: caddyDir, XDG_DATA_HOME: caddyDir, XDG_CONFIG_HOME: caddyDir },
  });
  running.push(caddy);
  await waitForHttp(`${caddyOrigin}/signin`, caddy);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
  for (const child of running.reverse()) await child.stop();
  await upstream?.close();
  await provider?.close();
});

async function upstreamView(page) {
  return JSON.parse(await page.locator('body').innerText());
}

async function loginUseLogout(origin) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/private/page?x=1`);
  assert.ok(page.url().startsWith(provider.issuer), `an anonymous visit goes to the provider, not ${page.url()}`);
  await logIn(page, origin, 'alice');
  assert.equal(new URL(page.url()).pathname, '/private/page', 'back at the page first asked for');
  const seen = await upstreamView(page);
  assert.equal(seen.headers['x-auth-email'], 'alice@example.com');
  assert.equal(seen.headers['x-auth-groups'], 'staff');

  const spoofed = await page.evaluate(async () => {
    const response = await fetch('/private/api', { headers: { 'X-Auth-Email': 'mallory@evil.example' } });
    return response.json();
  });
  assert.equal(spoofed.headers['x-auth-email'], 'alice@example.com', 'a client cannot spoof identity headers');

  await page.goto(`${origin}/signout?rd=/`);
  assert.ok(page.url().startsWith(provider.issuer), `sign-out continues at the provider, not ${page.url()}`);
  await Promise.all([page.waitForNavigation(), page.click('button[name=logout][value=yes]')]);
  await page.waitForSelector('input[name=login]');
  assert.ok(page.url().startsWith(provider.issuer), 'after sign-out the app sends the browser to log in again');
  const cookies = (await context.cookies(origin)).map((cookie) => cookie.name);
  assert.ok(!cookies.includes('tollgate'), `the session cookie is gone: ${cookies}`);
  const refused = await context.request.get(`${origin}/private/page`, { maxRedirects: 0 });
  assert.equal(refused.status(), 302);
  assert.match(refused.headers().location, /\/signin\?rd=/);
  await context.close();
}

test('ingress-nginx style auth-url / auth-signin: login, identity headers, sign-out, refused again', async () => {
  await loginUseLogout(`http://127.0.0.1:${ports.nginx}`);
  // A sign-out that returns to Tollgate's own address (its public_url) ends on its "signed out"
  // page, not on a browser error page.
  const context = await browser.newContext();
  const page = await context.newPage();
  const response = await page.goto(`http://127.0.0.1:${ports.tollgateNginx}/`);
  assert.equal(response.status(), 200);
  await page.waitForSelector('text=You are signed out');
  const missing = await page.goto(`http://127.0.0.1:${ports.tollgateNginx}/no-such-page`);
  assert.equal(missing.status(), 404);
  await page.waitForSelector('text=Page not found');
  assert.ok(!page.url().startsWith('chrome-error://'));
  await context.close();
});

test('Caddy forward_auth with redirect mode: login, identity headers, sign-out, refused again', async () => {
  await loginUseLogout(`http://127.0.0.1:${ports.caddy}`);
  // On a path the rules skip Tollgate vouches for nobody: a client's own copy of an identity
  // header never reaches the application. When the answer has no value, Caddy 2.10 leaves the
  // request's header as it was and Caddy 2.6 sends the placeholder's text: the recipe removes
  // the client's copy first.
  // Nor does the identity header of a gateway Tollgate replaced (the README recipe's lines,
  // `X-Auth-Request-*` and `Remote-*` removed by prefix).
  const skipped = await fetch(`http://127.0.0.1:${ports.caddy}/public/x`, {
    headers: {
      'X-Auth-Email': 'mallory@evil.example',
      'X-Forwarded-User': 'mallory',
      'X-Auth-Request-User': 'mallory',
      'Remote-User': 'mallory',
    },
  });
  assert.equal(skipped.status, 200);
  const seen = await skipped.json();
  assert.notEqual(seen.headers['x-auth-email'], 'mallory@evil.example', JSON.stringify(seen.headers));
  for (const name of ['x-forwarded-user', 'x-auth-request-user', 'remote-user']) {
    assert.equal(seen.headers[name], undefined, `${name}: ${JSON.stringify(seen.headers)}`);
  }
  // Caddy removes and copies the exact name only; an application reading headers the CGI way
  // takes X_Auth_Email for X-Auth-Email, and PHP X.Auth.Email too (Caddy's php_fastcgi keeps
  // the dot, PHP reads it as `_`). Tollgate refuses the request instead.
  for (const name of ['X_Auth_Email', 'X.Auth.Email']) {
    for (const path of ['/public/x', '/private/page']) {
      const other = await fetch(`http://127.0.0.1:${ports.caddy}${path}`, {
        redirect: 'manual',
        headers: { [name]: 'mallory@evil.example', Accept: 'application/json' },
      });
      assert.equal(other.status, path === '/public/x' ? 400 : 401, `${name} ${path}: ${await other.text()}`);
    }
  }
});

test('Caddy with `uri /auth` (no `?`) passes the client\'s query on: it is never read as the rules', async () => {
  const origin = `http://127.0.0.1:${ports.caddyBare}`;
  const plain = await fetch(`${origin}/private/page`, { redirect: 'manual' });
  assert.equal(plain.status, 401, 'no credential and no rules: refused');
  // Caddy's rewrite to `/auth` keeps the request's query when `uri` has none: the client would
  // write the rules. Refused, never a skip.
  const written = await fetch(`${origin}/private/page?skip-auth=.`, { redirect: 'manual' });
  const text = await written.text();
  assert.equal(written.status, 400, text);
  assert.match(text, /the original request's own query/);
  // A `#` (sent raw: clients strip fragments) stays in Go's query and out of the one Tollgate
  // reads from its target.
  const answer = await rawRequest(ports.caddyBare, 'GET /private/page?skip-auth=.# HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  assert.match(answer, /^HTTP\/1\.1 400 /, answer);
});

// The whole answer to `request` (which asks `Connection: close`), sent as it is on a new
// connection to `port`.
function rawRequest(port, request) {
  return new Promise((resolve, reject) => {
    // Written, not ended: Go takes a client's half-close for a cancelled request.
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => { answer += chunk; });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
  });
}

test('Caddy passes a client\'s X-Original-URL on to /auth: it never makes a protected path public', async () => {
  const origin = `http://127.0.0.1:${ports.caddy}`;
  const open = await fetch(`${origin}/public/logo.png`, { redirect: 'manual' });
  assert.equal(open.status, 200, 'the skip rule lets /public/ through');
  // Caddy sets X-Forwarded-Uri and copies the client's other headers, ingress-nginx's
  // X-Original-* included: two readings that disagree are neither believed.
  const smuggled = await fetch(`${origin}/private/page`, {
    redirect: 'manual',
    headers: { 'X-Original-URL': `${origin}/public/logo.png`, 'X-Original-Method': 'GET' },
  });
  assert.equal(smuggled.status, 401);
});
