// The npm `oidc-provider` as the peer of Tollgate's token service in scripts/load-token-service.sh:
// one confidential client allowed `client_credentials`, issuing RFC 9068 JWT access tokens
// (`at+jwt`) for one resource server, signed with the PEM private key Tollgate signs with.
//
//   node issuer-peer.mjs PORT KEY.pem CLIENT_SECRET
import { readFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const [port, keyFile, secret] = process.argv.slice(2);
const jwk = createPrivateKey(readFileSync(keyFile)).export({ format: 'jwk' });
const alg = jwk.kty === 'RSA' ? 'RS256' : 'ES256';
const issuer = `http://127.0.0.1:${port}`;
const resource = 'urn:tollgate:bench';
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'machine',
    client_secret: secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'scim',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [{ ...jwk, alg, use: 'sig', kid: 'bench' }] },
  scopes: ['scim'],
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'scim',
        audience: 'odj',
        accessTokenTTL: 1800,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
  enabledJWA: { idTokenSigningAlgValues: [alg] },
});
createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider ${alg} on ${issuer}`);
});
