// Makes an RSA key, its JWKS, and a realistic RS256 access token (Keycloak-like, 17 claims)
// for the load test. Usage: node make-token.mjs OUT_DIR ISSUER AUDIENCE
import { generateKeyPairSync, sign, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, issuer, audience] = process.argv.slice(2);
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench-1', use: 'sig', alg: 'RS256' };
writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
const now = Math.floor(Date.now() / 1000);
const claims = {
  iss: issuer, sub: randomUUID(), aud: audience, exp: now + 3600, iat: now, nbf: now, jti: randomUUID(),
  typ: 'Bearer', azp: 'bench', scope: 'openid profile email read write', email: 'robert@example.com',
  email_verified: true, name: 'Robert Example', preferred_username: 'robert',
  realm_access: { roles: ['offline_access', 'uma_authorization', 'user'] },
  resource_access: { api: { roles: ['writer', 'reader'] } },
};
const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const input = `${encode({ alg: 'RS256', typ: 'at+jwt', kid: 'bench-1' })}.${encode(claims)}`;
const signature = sign('sha256', Buffer.from(input), privateKey).toString('base64url');
writeFileSync(join(dir, 'token.txt'), `${input}.${signature}`);
