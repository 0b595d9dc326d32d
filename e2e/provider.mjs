// The npm `oidc-provider` (a certified OpenID Provider) as the identity provider of the
// end-to-end tests: one confidential client for Tollgate, development login and consent forms,
// RP-initiated logout, and an account whose claims include e-mail and groups.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

export async function startProvider({
  port, redirectUris, postLogoutRedirectUris, accessTokenSeconds = 3600,
  // A new refresh token at every refresh, the old one spent (Keycloak's and Auth0's rotation).
  rotateRefreshTokens = false,
  // OIDC Back-Channel Logout 1.0: where the provider POSTs a logout_token (with `sid`).
  backchannelLogoutUri,
  // Client metadata replacing the defaults (e.g. private_key_jwt with `jwks`).
  client = {},
  // The algorithms discovery lists for client assertions (oidc-provider's default when unset).
  clientAuthSigningAlgValues,
  // RFC 7662 introspection at /token/introspection.
  introspection = false,
}) {
  const issuer = `http://127.0.0.1:${port}`;
  const backchannel = backchannelLogoutUri
    ? { backchannel_logout_uri: backchannelLogoutUri, backchannel_logout_session_required: true }
    : {};
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'tollgate',
      client_secret: 'tollgate-e2e-client-secret',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...backchannel,
      ...client,
    }],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.com`, email_verified: true, name: `User ${id}`, groups: ['staff'] };
        },
      };
    },
    pkce: { required: () => true },
    // Refresh tokens for every login of a client allowed the grant (Tollgate refreshes them).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: { AccessToken: accessTokenSeconds },
    ...(rotateRefreshTokens ? { rotateRefreshToken: true } : {}),
    // oidc-provider's own dispatcher refuses loopback addresses (SSRF protection); the
    // back-channel logout here goes to a server on 127.0.0.1 on purpose.
    fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: Boolean(backchannelLogoutUri) },
      introspection: { enabled: introspection },
    },
    ...(clientAuthSigningAlgValues ? { enabledJWA: { clientAuthSigningAlgValues } } : {}),
    cookies: { keys: ['e2e-cookie-signing-key-0123456789'] },
  });
  // Every client assertion received (RFC 7523), decoded, with the endpoint and its answer.
  const assertions = [];
  provider.use(async (ctx, next) => {
    await next();
    const assertion = ctx.oidc?.params?.client_assertion;
    if (typeof assertion !== 'string') return;
    const [header, claims] = assertion.split('.').slice(0, 2).map((part) => {
      try { return JSON.parse(Buffer.from(part, 'base64url')); } catch { return null; }
    });
    assertions.push({ path: ctx.path, status: ctx.status, header, claims, assertion });
  });
  const server = createServer(provider.callback());
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  // Every token-endpoint answer, in order: which grant, for which account, and whether it
  // was granted (`grant.success`) or refused (`grant.error`, e.g. a spent refresh token).
  const grants = [];
  provider.on('grant.success', (ctx) => {
    grants.push({ type: ctx.oidc.params.grant_type, account: ctx.oidc.entities.Account?.accountId, ok: true, at: new Date().toISOString() });
  });
  provider.on('grant.error', (ctx, error) => {
    grants.push({
      type: ctx.oidc.params?.grant_type, account: ctx.oidc.entities?.Account?.accountId, ok: false,
      error: `${error.message}${error.error_detail ? `: ${error.error_detail}` : ''}`, at: new Date().toISOString(),
    });
  });
  const backchannelLogouts = [];
  provider.on('backchannel.success', (ctx, client, accountId) => backchannelLogouts.push({ account: accountId, ok: true }));
  provider.on('backchannel.error', (ctx, error, client, accountId) => backchannelLogouts.push({ account: accountId, ok: false, error: error.message }));
  return {
    issuer,
    grants,
    assertions,
    backchannelLogouts,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Fills oidc-provider's development login and consent forms until the page is back at `origin`. */
export async function logIn(page, origin, username) {
  for (let step = 0; step < 6 && !page.url().startsWith(origin); step += 1) {
    const login = page.locator('input[name=login]');
    if (await login.count()) {
      await login.fill(username);
      await page.fill('input[name=password]', 'any-password');
    }
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  }
  assert.ok(page.url().startsWith(origin), `ended at ${page.url()}`);
}
