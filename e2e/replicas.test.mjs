// SPEC §12 against real parts (issue 12, item 4): three `tollgate serve` processes behind
// Debian's haproxy (round robin, no stickiness), sessions and token-service state in Redis,
// once on a Redis Cluster of three masters with a replica each and once on a master and
// replica behind three Sentinels with a password. The npm oidc-provider rotates refresh tokens
// and sends back-channel logouts; headless Chromium is the user. Through the load balancer:
// logins, one refresh for many parallel requests, codes, refresh tokens, revocations, an admin
// delete and a back-channel logout made on one replica and honoured on the others, a rolling
// restart, and Redis masters replaced under traffic, once by a coordinated failover
// (`CLUSTER FAILOVER` on every shard's replica, `SENTINEL FAILOVER`) and once by SIGKILL.
// Assertions count requests and answers, never time.
//
// What a client may see while a replica restarts or Redis fails over: a session that is alive
// is answered 200, or — only if no replica could answer at all — haproxy's own 502/503
// (retryable; with `retry-on` and `option redispatch` none is expected while two replicas are
// up). During a Redis failover a replica may also answer 503 itself (the store did not
// answer: it fails closed). Never a 401 or a login redirect: that would be a session lost. An
// ended session is never answered 200.
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { chromiumArgs, freePort, requireProgram, write } from './lib.mjs';
import { fromHaproxy, startHaproxy, startRedisCluster, startRedisSentinel, startReplicas, until } from './cluster.mjs';
import { logIn, startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';

// The provider's access tokens live ACCESS_SECONDS; Tollgate refreshes REFRESH_BEFORE seconds
// before they expire, so a session is due DUE_AFTER seconds after its login or refresh.
const ACCESS_SECONDS = 10;
const REFRESH_BEFORE = 5;
const DUE_AFTER = ACCESS_SECONDS - REFRESH_BEFORE;
const PARALLEL = 24;
const ADMIN_TOKEN = 'e2e-replicas-admin-token-0123456789abcdef';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let browser;

before(async () => {
  requireProgram('/usr/bin/chromium');
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs, headless: true });
});

after(async () => {
  await browser?.close();
});

/** One GET with a Cookie header, redirects not followed. */
async function get(url, cookie, headers = {}) {
  const response = await fetch(url, { redirect: 'manual', headers: { ...(cookie ? { cookie } : {}), ...headers } });
  return { status: response.status, location: response.headers.get('location'), body: await response.text() };
}

async function post(url, form) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, json, text };
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function replicaSuite(title, startRedis, { sentinel = false } = {}) {
  describe(title, () => {
    const ports = {};
    let redis;
    let provider;
    let upstream;
    let callbackServer;
    let backchannelServer;
    let tollgates;
    let lb;
    let origin;
    let discovery;
    const sessions = {};
    const ended = {};
    const recordedLogoutTokens = [];
    // Token-service tokens that were refused once and must stay refused.
    const spent = {};
    let backchannelTarget;

    /** The Cookie header Chromium sends to the load balancer. */
    async function cookieOf(context) {
      return (await context.cookies(origin)).map(({ name, value }) => `${name}=${value}`).join('; ');
    }

    /** Whether an answer is the upstream's page for `user`, with Tollgate's identity header. */
    function servedTo(answer, user) {
      if (answer.status !== 200) return false;
      try {
        return JSON.parse(answer.body).headers['x-user'] === `${user}@example.com`;
      } catch {
        return false;
      }
    }

    /** Whether an answer refuses the session: a login redirect to the provider, or a 401. */
    function refusedSession(answer) {
      return (answer.status === 302 && (answer.location ?? '').startsWith(provider.issuer)) || answer.status === 401;
    }

    /**
     * A session ended on one replica is refused by `replica` from its next request on (SPEC
     * §12): Redis sends the invalidation of its copy before the end is confirmed, and a replica
     * uses a copy only when nothing Redis sent is still unread. Asked four times: refused
     * every time, the first included.
     */
    async function assertEndedOn(name, url, cookie) {
      for (let attempt = 0; attempt < 4; attempt += 1) {
        const answer = await get(url, cookie);
        assert.ok(refusedSession(answer), `${name}, request ${attempt + 1} after the end: ${answer.status} ${answer.location ?? ''} ${answer.body.slice(0, 200)}`);
      }
    }

    /** A new Chromium context logged in as `user` through a proxied route of the LB. */
    async function logInThroughRoute(user) {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${origin}/app/${user}`);
      assert.ok(page.url().startsWith(provider.issuer), `an anonymous visit goes to the provider, not ${page.url()}`);
      await logIn(page, origin, user);
      const body = await page.locator('body').innerText();
      assert.equal(new URL(page.url()).pathname, `/app/${user}`, `back at the page, with: ${body.slice(0, 300)}`);
      assert.equal(JSON.parse(body).headers['x-user'], `${user}@example.com`);
      return { context, page, user, cookie: await cookieOf(context), loggedInAt: Date.now() };
    }

    /** `url` of the token service at `replica` (its public listener) instead of the LB. */
    const at = (replica, url) => url.replace(origin, replica.origin);

    /** Chromium logs in as `user` at the token service's federated login; gives the code. */
    async function federatedCode(context, user) {
      const { verifier, challenge } = pkce();
      const state = randomBytes(12).toString('base64url');
      const redirect = `http://127.0.0.1:${ports.callback}/cb`;
      const url = new URL(discovery.authorization_endpoint);
      url.search = new URLSearchParams({
        client_id: 'fed-app', redirect_uri: redirect, response_type: 'code', scope: 'openid email',
        state, code_challenge: challenge, code_challenge_method: 'S256',
      });
      const page = await context.newPage();
      await page.goto(url.href);
      // oidc-provider's login and consent forms, as long as the browser is there.
      for (let step = 0; step < 6 && page.url().startsWith(provider.issuer); step += 1) {
        const login = page.locator('input[name=login]');
        if (await login.count()) {
          await login.fill(user);
          await page.fill('input[name=password]', 'any-password');
        }
        await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      }
      const back = new URL(page.url());
      const text = back.href.startsWith(redirect) ? '' : await page.locator('body').innerText();
      await page.close();
      assert.ok(back.href.startsWith(redirect), `ended at ${back} with: ${text.slice(0, 300)}`);
      assert.equal(back.searchParams.get('state'), state, `back at the client: ${back}`);
      assert.equal(back.searchParams.get('iss'), origin);
      assert.ok(back.searchParams.get('code'), `a code: ${back}`);
      return { code: back.searchParams.get('code'), verifier, redirect };
    }

    function redeem(tokenEndpoint, { code, verifier, redirect }) {
      return post(tokenEndpoint, {
        grant_type: 'authorization_code', code, redirect_uri: redirect, client_id: 'fed-app', code_verifier: verifier,
      });
    }

    const refreshAt = (tokenEndpoint, refreshToken) => post(tokenEndpoint, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'fed-app' });
    const validateAt = async (replica, accessToken) => (await get(`${replica.origin}/validate`, null, { authorization: `Bearer ${accessToken}` })).status;

    /** Refresh-token grants the provider answered for `user`. */
    const refreshesOf = (user) => provider.grants.filter((grant) => grant.type === 'refresh_token' && grant.account === user);

    /**
     * Requests through the LB until stopped, from `workers` loops: each live session must be
     * served to its user (or see haproxy's own 502/503), each ended one must never be served.
     */
    function traffic(live, gone, workers = 4) {
      const counts = { requests: 0, served: 0, haproxy: 0, tollgate503: 0, refusedEnded: 0 };
      const failures = [];
      let running = true;
      const loop = async (worker) => {
        for (let round = 0; running; round += 1) {
          const all = [...live.map((session) => ({ session, alive: true })), ...gone.map((session) => ({ session, alive: false }))];
          const { session, alive } = all[(round + worker) % all.length];
          let answer;
          try {
            answer = await get(`${origin}/app/${session.user}?worker=${worker}&round=${round}`, session.cookie);
          } catch (error) {
            failures.push(`${session.user}: no answer at all: ${error.message}`);
            continue;
          }
          counts.requests += 1;
          if (fromHaproxy(answer.status, answer.body)) {
            counts.haproxy += 1;
          } else if (alive && servedTo(answer, session.user)) {
            counts.served += 1;
          } else if (alive && answer.status === 503) {
            counts.tollgate503 += 1;
          } else if (!alive && answer.status !== 200) {
            counts.refusedEnded += 1;
          } else {
            failures.push(`${alive ? 'live' : 'ended'} session of ${session.user}: ${answer.status} ${answer.location ?? ''} ${answer.body.slice(0, 200)}`);
          }
        }
      };
      const loops = Array.from({ length: workers }, (_, worker) => loop(worker));
      return {
        counts,
        failures,
        async stop() {
          running = false;
          await Promise.all(loops);
          return { counts, failures };
        },
      };
    }

    /**
     * Every replica still refuses what the token service refused before. Right after a Redis
     * failover a replica may answer `503 temporarily_unavailable` (its store did not answer:
     * a refusal too, and retryable); it is asked again, at most three times, until it answers
     * for good. Gives how many 503s it took.
     */
    async function stillSpent() {
      assert.ok(spent.code, 'the code, refresh and revocation test recorded its tokens');
      let unavailable = 0;
      const refusedFor = async (what, replica, ask, refused) => {
        for (let attempt = 1; ; attempt += 1) {
          const answer = await ask();
          if (answer.status === 503 && answer.text.includes('temporarily_unavailable') && attempt < 3) {
            unavailable += 1;
            continue;
          }
          assert.equal(answer.status, refused, `${replica.name}: ${what}: ${answer.text}`);
          return;
        }
      };
      for (const replica of tollgates.replicas) {
        const token = at(replica, discovery.token_endpoint);
        await refusedFor('the spent code', replica, () => redeem(token, spent.code), 400);
        for (const refreshToken of [spent.reusedRefresh, spent.refreshOfEndedGrant, spent.revokedRefresh]) {
          await refusedFor('a spent refresh token', replica, () => refreshAt(token, refreshToken), 400);
        }
        for (const accessToken of [spent.accessOfReplayedCode, spent.revokedAccess]) {
          await refusedFor('a revoked access token', replica, async () => {
            const answer = await get(`${replica.origin}/validate`, null, { authorization: `Bearer ${accessToken}` });
            return { status: answer.status, text: answer.body };
          }, 401);
        }
      }
      return unavailable;
    }

    before(async () => {
      for (const name of ['lb', 'provider', 'upstream', 'callback', 'backchannel']) ports[name] = await freePort();
      origin = `http://127.0.0.1:${ports.lb}`;
      redis = await startRedis();
      provider = await startProvider({
        port: ports.provider,
        redirectUris: [`${origin}/callback`],
        postLogoutRedirectUris: [`${origin}/`],
        accessTokenSeconds: ACCESS_SECONDS,
        rotateRefreshTokens: true,
        backchannelLogoutUri: `http://127.0.0.1:${ports.backchannel}/backchannel-logout`,
      });
      upstream = await startUpstream(ports.upstream);
      // The federated client's redirect URI: the test reads the code from Chromium's URL.
      callbackServer = createServer((request, response) => response.end('back at the client'));
      await new Promise((resolve) => callbackServer.listen(ports.callback, '127.0.0.1', resolve));
      // oidc-provider's back-channel logout goes through here to one chosen replica; the
      // token is kept so that it can be replayed at another.
      backchannelServer = createServer((request, response) => {
        const chunks = [];
        request.on('data', (chunk) => chunks.push(chunk));
        request.on('end', async () => {
          const body = Buffer.concat(chunks).toString();
          recordedLogoutTokens.push(new URLSearchParams(body).get('logout_token'));
          const answer = await fetch(`${backchannelTarget.origin}/backchannel-logout`, {
            method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body,
          });
          response.statusCode = answer.status;
          response.end(await answer.text());
        });
      });
      await new Promise((resolve) => backchannelServer.listen(ports.backchannel, '127.0.0.1', resolve));
      tollgates = await startReplicas(3, ({ port, adminPort, dir }) => {
        const adminTokenFile = write(dir, 'admin-token', ADMIN_TOKEN);
        return `[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${adminPort}"
public_url = "${origin}"
admin_token_file = "${adminTokenFile}"

[session]
store = "redis"
redis_url = ${redis.urlToml ?? `"${redis.url}"`}
secrets = ["e2e-replicas-session-secret-e2e-replicas-session-secret"]
refresh_before = "${REFRESH_BEFORE}s"

[[provider]]
name = "op"
issuer = "${provider.issuer}"
client_id = "tollgate"
client_secret = "tollgate-e2e-client-secret"
scopes = ["openid", "email", "profile", "groups"]

[[provider]]
name = "self"
issuer = "${origin}"
client_id = "fed-app"
client_auth = "none"
audiences = ["odj"]

[forward_auth]
provider = "self"

[[route]]
upstream = "http://127.0.0.1:${ports.upstream}"
provider = "op"
[route.headers]
"X-User" = "claim:email"

[token_service]
issuer = "${origin}"
signing_key_file = "${dir}/issuer-key.pem"
store = "redis"

[[token_service.client]]
client_id = "fed-app"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["http://127.0.0.1:${ports.callback}/cb"]
login_provider = "op"
source = "op"
audience = "odj"
`;
      });
      lb = await startHaproxy({
        port: ports.lb,
        backends: tollgates.replicas.map(({ name, port, adminPort }) => ({ name, port, checkPort: adminPort })),
      });
      await until('haproxy to see every replica up', () => lb.allUp());
      discovery = await (await fetch(`${origin}/.well-known/openid-configuration`)).json();
      backchannelTarget = tollgates.replicas[0];
    });

    after(async () => {
      for (const session of Object.values({ ...sessions, ...ended })) await session.context?.close();
      await lb?.stop();
      await tollgates?.stop();
      await new Promise((resolve) => callbackServer?.close(resolve) ?? resolve());
      await new Promise((resolve) => backchannelServer?.close(resolve) ?? resolve());
      await upstream?.close();
      await provider?.close();
      await redis?.stop();
    });

    test('every replica reaches Redis (/readyz)', async () => {
      for (const replica of tollgates.replicas) {
        const answer = await get(`${replica.admin}/readyz`);
        assert.equal(answer.status, 200, `${replica.name}: ${answer.body}\n${replica.process.output}`);
      }
    });

    test('Chromium logs in at oidc-provider through the load balancer and gets the protected page', async () => {
      const before = await lb.sent();
      sessions.bob = await logInThroughRoute('bob');
      for (const replica of tollgates.replicas) {
        assert.ok(servedTo(await get(`${replica.origin}/app/bob`, sessions.bob.cookie), 'bob'), `${replica.name} serves the session`);
      }
      const after = await lb.sent();
      const used = tollgates.replicas.filter(({ name }) => after[name] > (before[name] ?? 0));
      assert.equal(used.length, 3, `the login went through every replica: ${JSON.stringify({ before, after })}`);
    });

    test('Chromium logs in at the token service\'s federated login; the code is redeemed through the LB', async () => {
      const context = await browser.newContext();
      const issued = await federatedCode(context, 'fay');
      const tokens = await redeem(discovery.token_endpoint, issued);
      assert.equal(tokens.status, 200, tokens.text);
      const claims = JSON.parse(Buffer.from(tokens.json.id_token.split('.')[1], 'base64url'));
      assert.equal(claims.iss, origin);
      assert.equal(claims.sub, 'op:fay');
      for (const replica of tollgates.replicas) {
        assert.equal(await validateAt(replica, tokens.json.access_token), 200, `${replica.name} accepts a token another replica signed`);
      }
      await context.close();
    });

    test(`${PARALLEL} parallel requests after the access token is due: one refresh at the provider, every answer 200`, async () => {
      const bob = sessions.bob;
      assert.ok(bob, 'bob logged in');
      assert.equal(refreshesOf('bob').length, 0, 'no refresh yet');
      await sleep(Math.max(0, bob.loggedInAt + (DUE_AFTER + 1) * 1000 - Date.now()));
      const answers = await Promise.all(Array.from({ length: PARALLEL }, (_, index) => get(`${origin}/app/bob?parallel=${index}`, bob.cookie)));
      const statuses = answers.map((answer) => answer.status);
      assert.deepEqual(statuses, Array(PARALLEL).fill(200), `every answer 200: ${statuses}`);
      assert.ok(answers.every((answer) => servedTo(answer, 'bob')));
      assert.deepEqual(refreshesOf('bob').map(({ type, account, ok }) => ({ type, account, ok })),
        [{ type: 'refresh_token', account: 'bob', ok: true }], 'one refresh-token use at the provider');
      await sessions.bob.page.reload();
      assert.equal(JSON.parse(await sessions.bob.page.locator('body').innerText()).headers['x-user'], 'bob@example.com', 'Chromium still signed in');
      assert.equal(refreshesOf('bob').length, 1);
    });

    test('a code, a refresh token and a revocation made on one replica hold on the others', async () => {
      const [r1, r2, r3] = tollgates.replicas;
      const token = discovery.token_endpoint;
      const revoke = discovery.revocation_endpoint;
      const context = await browser.newContext();

      // A code redeemed on r2 is spent on r3; the replay revokes what it issued, on r1 too.
      const first = await federatedCode(context, 'gus');
      const redeemed = await redeem(at(r2, token), first);
      assert.equal(redeemed.status, 200, redeemed.text);
      assert.equal(await validateAt(r1, redeemed.json.access_token), 200);
      const replayed = await redeem(at(r3, token), first);
      assert.equal(replayed.status, 400, replayed.text);
      assert.equal(replayed.json?.error, 'invalid_grant');
      assert.equal(await validateAt(r1, redeemed.json.access_token), 401, 'the replay on r3 revoked the token r2 issued');
      assert.equal((await refreshAt(at(r1, token), redeemed.json.refresh_token)).status, 400, 'and its refresh token');

      // A refresh token rotated on r2 and reused on r3 ends the grant on r1.
      const second = await redeem(at(r1, token), await federatedCode(context, 'gus'));
      assert.equal(second.status, 200, second.text);
      const rotated = await refreshAt(at(r2, token), second.json.refresh_token);
      assert.equal(rotated.status, 200, rotated.text);
      assert.notEqual(rotated.json.refresh_token, second.json.refresh_token, 'rotated');
      const reused = await refreshAt(at(r3, token), second.json.refresh_token);
      assert.equal(reused.status, 400, reused.text);
      assert.equal(reused.json?.error, 'invalid_grant');
      const afterReuse = await refreshAt(at(r1, token), rotated.json.refresh_token);
      assert.equal(afterReuse.status, 400, `the reuse on r3 ended the grant: ${afterReuse.text}`);
      assert.equal(await validateAt(r1, rotated.json.access_token), 401, 'with its access tokens');

      // Revocations on r2 (access token) and r3 (refresh token) hold on r1.
      const third = await redeem(at(r1, token), await federatedCode(context, 'gus'));
      assert.equal(third.status, 200, third.text);
      for (const replica of [r1, r2, r3]) assert.equal(await validateAt(replica, third.json.access_token), 200);
      const revokedAccess = await post(at(r2, revoke), { token: third.json.access_token, token_type_hint: 'access_token', client_id: 'fed-app' });
      assert.equal(revokedAccess.status, 200, revokedAccess.text);
      for (const replica of [r1, r2, r3]) assert.equal(await validateAt(replica, third.json.access_token), 401, `${replica.name} refuses the revoked token`);
      const revokedRefresh = await post(at(r3, revoke), { token: third.json.refresh_token, token_type_hint: 'refresh_token', client_id: 'fed-app' });
      assert.equal(revokedRefresh.status, 200, revokedRefresh.text);
      const afterRevoke = await refreshAt(at(r1, token), third.json.refresh_token);
      assert.equal(afterRevoke.status, 400, afterRevoke.text);
      assert.equal(afterRevoke.json?.error, 'invalid_grant');
      Object.assign(spent, {
        code: first, accessOfReplayedCode: redeemed.json.access_token,
        reusedRefresh: second.json.refresh_token, refreshOfEndedGrant: rotated.json.refresh_token,
        revokedAccess: third.json.access_token, revokedRefresh: third.json.refresh_token,
      });
      await context.close();
    });

    test('an admin delete on replica 1 is refused on replicas 2 and 3 and through the LB', async () => {
      const [r1, r2, r3] = tollgates.replicas;
      const carol = await logInThroughRoute('carol');
      const authorization = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const listed = await get(`${r2.admin}/admin/sessions?sub=carol`, null, authorization);
      assert.equal(listed.status, 200, listed.body);
      const handles = JSON.parse(listed.body).map((session) => session.handle);
      assert.equal(handles.length, 1, `one session of carol, listed by r2: ${listed.body}`);
      const deleted = await fetch(`${r1.admin}/admin/sessions/${handles[0]}`, { method: 'DELETE', headers: authorization });
      assert.equal(deleted.status, 204, await deleted.text());
      for (const replica of [r2, r3, r1]) await assertEndedOn(replica.name, `${replica.origin}/app/carol`, carol.cookie);
      for (let round = 0; round < 6; round += 1) {
        const answer = await get(`${origin}/app/carol?round=${round}`, carol.cookie);
        assert.ok(refusedSession(answer), `LB: ${answer.status} ${answer.location}`);
      }
      // The page's own subresources (its icon, an image, a script's fetch), sent after the end,
      // get 401: none of them begins a login that the provider's single sign-on would complete
      // unseen, making carol a new session nobody asked for (Chromium asks for /favicon.ico
      // once the page has loaded, and on a busy machine that can come after the delete).
      const loads = await carol.page.evaluate(async () => {
        const image = await new Promise((resolve) => {
          const element = new Image();
          element.onload = () => resolve('loaded');
          element.onerror = () => resolve('refused');
          element.src = '/favicon.ico?after=delete';
        });
        const fetched = await fetch('/app/carol?after=delete', { credentials: 'include' });
        return { image, fetched: fetched.status };
      });
      assert.deepEqual(loads, { image: 'refused', fetched: 401 });
      ended.carol = carol;
      const left = await get(`${r3.admin}/admin/sessions?sub=carol`, null, authorization);
      assert.equal(JSON.parse(left.body).length, 0, `no session of carol is left or made again: ${left.body}`);
    });

    test('a back-channel logout from oidc-provider, delivered to replica 1, is refused on replicas 2 and 3', async () => {
      const [r1, r2, r3] = tollgates.replicas;
      const dave = await logInThroughRoute('dave');
      backchannelTarget = r1;
      // The user signs out at the provider itself; it tells Tollgate through the back channel.
      const page = await dave.context.newPage();
      await page.goto(`${provider.issuer}/session/end`);
      await Promise.all([page.waitForNavigation(), page.click('button[name=logout][value=yes]')]);
      assert.deepEqual(provider.backchannelLogouts.filter(({ account }) => account === 'dave'), [{ account: 'dave', ok: true }],
        'oidc-provider delivered the logout_token and Tollgate answered 200');
      assert.equal(recordedLogoutTokens.length, 1);
      for (const replica of [r2, r3, r1]) await assertEndedOn(replica.name, `${replica.origin}/app/dave`, dave.cookie);
      for (let round = 0; round < 6; round += 1) {
        assert.ok(refusedSession(await get(`${origin}/app/dave?round=${round}`, dave.cookie)), 'LB');
      }
      ended.dave = dave;
    });

    test('a logout_token used on replica 1 is refused as a replay on replicas 2 and 3', async () => {
      const [, r2, r3] = tollgates.replicas;
      const [logoutToken] = recordedLogoutTokens;
      assert.ok(logoutToken, 'the back-channel logout above recorded its token');
      for (const replica of [r2, r3]) {
        const replay = await post(`${replica.origin}/backchannel-logout`, { logout_token: logoutToken });
        assert.equal(replay.status, 400, `${replica.name} accepted a replayed jti (SPEC §12): ${replay.status} ${replay.text}`);
      }
    });

    test('a rolling restart of the three replicas under traffic loses no session', async () => {
      const bob = sessions.bob;
      assert.ok(bob, 'bob logged in');
      const gone = [ended.carol, ended.dave].filter(Boolean);
      const load = traffic([bob], gone);
      for (const replica of tollgates.replicas) {
        const requestsBefore = load.counts.requests;
        await tollgates.restart(replica);
        await until(`haproxy to see ${replica.name} up again`, () => lb.allUp());
        const sentBefore = (await lb.sent())[replica.name];
        await until(`traffic to reach ${replica.name} again`, async () => (await lb.sent())[replica.name] > sentBefore + 5);
        assert.ok(load.counts.requests > requestsBefore, 'requests went on while it restarted');
      }
      const { counts, failures } = await load.stop();
      assert.deepEqual(failures, [], `counts: ${JSON.stringify(counts)}; bob's refreshes at the provider: ${JSON.stringify(refreshesOf('bob'))}`);
      assert.ok(counts.served > 0 && counts.refusedEnded > 0, JSON.stringify(counts));
      assert.equal(counts.tollgate503, 0, `no replica failed a request: ${JSON.stringify(counts)}`);
      assert.equal(counts.served + counts.haproxy + counts.refusedEnded, counts.requests, JSON.stringify(counts));
      for (const replica of tollgates.replicas) {
        assert.ok(servedTo(await get(`${replica.origin}/app/bob`, bob.cookie), 'bob'), `${replica.name} (restarted) still serves bob's session`);
        for (const session of gone) assert.ok(refusedSession(await get(`${replica.origin}/app/${session.user}`, session.cookie)));
      }
      const refreshes = refreshesOf('bob');
      assert.ok(refreshes.every((grant) => grant.ok), `no refresh was refused at the provider: ${JSON.stringify(refreshes)}`);
      assert.equal(await stillSpent(), 0, 'Redis did not move: the token service answered every time');
      console.log(`rolling restart: ${JSON.stringify(counts)}; bob's refreshes so far: ${refreshes.length}`);
    });

    /** Traffic through the LB while `move` makes another Redis node the master. */
    async function underTraffic(what, move) {
      const bob = sessions.bob;
      assert.ok(bob, 'bob logged in');
      const gone = [ended.carol, ended.dave].filter(Boolean);
      const load = traffic([bob], gone);
      await until('traffic to start', async () => load.counts.requests > 10);
      const before = load.counts.requests;
      const old = await move();
      const during = load.counts.requests - before;
      await until(`traffic to go on after the ${what}`, async () => load.counts.requests > before + during + 20);
      const { counts, failures } = await load.stop();
      assert.deepEqual(failures, [], `counts: ${JSON.stringify(counts)}; bob's refreshes at the provider: ${JSON.stringify(refreshesOf('bob'))}`);
      assert.ok(counts.served > 0 && counts.refusedEnded > 0, JSON.stringify(counts));
      assert.ok(during > 0, `requests were answered during the ${what}`);
      for (const replica of tollgates.replicas) {
        assert.ok(servedTo(await get(`${replica.origin}/app/bob`, bob.cookie), 'bob'), `${replica.name} still serves bob's session after the ${what} of ${old}`);
        for (const session of gone) assert.ok(refusedSession(await get(`${replica.origin}/app/${session.user}`, session.cookie)));
      }
      const refreshes = refreshesOf('bob');
      assert.ok(refreshes.every((grant) => grant.ok), `no refresh was refused at the provider: ${JSON.stringify(refreshes)}`);
      const unavailable = await stillSpent();
      console.log(`${what}: ${JSON.stringify(counts)}, ${during} while it ran; token service 503s afterwards: ${unavailable}; bob's refreshes so far: ${refreshes.length}`);
    }

    test('a Redis master failover under traffic loses no session and lets no ended session through', async () => {
      await underTraffic('failover', () => redis.failover());
    });

    // A master killed outright may take a refreshed session no replica acknowledged with it:
    // the replica that refreshed writes it again to the promoted master, holding the refresh
    // lease, and the others wait for it instead of presenting the spent refresh token.
    test('a Redis master killed under traffic: no session lost, no ended session let through', async () => {
      await underTraffic('master kill', () => redis.killMaster());
    });

    if (sentinel) {
      test('with the first sentinel of the URL down, a restarted replica finds the master through the others', async () => {
        const bob = sessions.bob;
        assert.ok(bob, 'bob logged in');
        await redis.stopFirstSentinel();
        const [r1] = tollgates.replicas;
        await tollgates.restart(r1);
        const ready = await get(`${r1.admin}/readyz`);
        assert.equal(ready.status, 200, `${ready.body}\n${r1.process.output}`);
        assert.ok(servedTo(await get(`${r1.origin}/app/bob`, bob.cookie), 'bob'), 'r1 serves the session');
      });
    }
  });
}

replicaSuite('three replicas behind haproxy on a Redis Cluster (3 masters, 3 replicas)', async () => {
  const cluster = await startRedisCluster();
  return {
    urlToml: cluster.urlToml,
    failover: () => cluster.failEveryMasterOver(),
    killMaster: () => cluster.killEveryMaster(),
    stop: () => cluster.stop(),
  };
});

replicaSuite('three replicas behind haproxy on Redis Sentinel (master, replica, 3 sentinels, a password)', async () => {
  const sentinel = await startRedisSentinel('e2e-redis-password-0123456789');
  return {
    url: sentinel.url,
    failover: () => sentinel.failover(),
    killMaster: () => sentinel.killMaster(),
    stopFirstSentinel: () => sentinel.stopFirstSentinel(),
    stop: () => sentinel.stop(),
  };
}, { sentinel: true });
