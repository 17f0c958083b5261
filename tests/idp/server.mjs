// A real, certified OpenID Connect provider (oidc-provider) for the identity tests.
//
// Usage: [IDP_WEB_REDIRECT_URIS=uri,...] node server.mjs PORT KEYS_FILE [--rotate]
// Issues JWT access tokens with resource indicators, two ways:
// - the client_credentials grant: each confidential client stands for one user of one
//   tenant (client id = user);
// - authorization code + PKCE for the public client `switchboard-web` (no secret; the
//   web chat), registered with the redirect URIs in IDP_WEB_REDIRECT_URIS (exact
//   match, as a real deployment registers its own). People sign in on the provider's
//   development login page with a USERS name as login (any password).
// Either way the user's tenant, roles and name ride in the access token as claims.
// Resources:
//   https://switchboard.test/api    audience "switchboard", 10 minutes
//   https://switchboard.test/short  audience "switchboard", 1 second (expiry tests)
//   https://other.test/api          audience "other" (wrong audience)
// The signing keys live in KEYS_FILE (made on first start); --rotate puts a new key
// first, so tokens are signed with a kid the API has not seen.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, flag] = process.argv.slice(2);

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = existsSync(keysFile) ? JSON.parse(readFileSync(keysFile, 'utf8')) : [newKey()];
if (flag === '--rotate') keys = [newKey(), ...keys];
writeFileSync(keysFile, JSON.stringify(keys), { mode: 0o600 });

export const USERS = {
  'acme-ann': { tenant: 'acme', roles: ['requester'], name: 'Ann (acme requester)' },
  'acme-abe': { tenant: 'acme', roles: ['approver'], name: 'Abe (acme approver)' },
  'acme-ada': { tenant: 'acme', roles: ['tenant-admin'], name: 'Ada (acme tenant admin)' },
  'globex-gus': { tenant: 'globex', roles: ['requester', 'approver'], name: 'Gus (globex)' },
};

const RESOURCES = {
  'https://switchboard.test/api': { audience: 'switchboard', accessTokenTTL: 600 },
  'https://switchboard.test/short': { audience: 'switchboard', accessTokenTTL: 1 },
  'https://other.test/api': { audience: 'other', accessTokenTTL: 600 },
};

export const WEB_CLIENT = 'switchboard-web';
const webRedirects = (process.env.IDP_WEB_REDIRECT_URIS || '').split(',').filter(Boolean);
const webClients = webRedirects.length
  ? [{
      client_id: WEB_CLIENT,
      application_type: 'web',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: webRedirects,
    }]
  : [];

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [
    ...Object.keys(USERS).map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    ...webClients,
  ],
  // The browser calls the token endpoint from the web chat's origin (CORS): allowed
  // for the public client from the origins of its registered redirect URIs only.
  clientBasedCORS: (_ctx, origin, client) =>
    client.clientId === WEB_CLIENT && webRedirects.some((uri) => new URL(uri).origin === origin),
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://switchboard.test/api',
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        const info = RESOURCES[resource];
        if (!info) throw new Provider.errors.InvalidTarget();
        return { ...info, scope: 'api', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  // A signed-in person (authorization code) is their account; a client_credentials
  // client is the user it is named after.
  extraTokenClaims: (_ctx, token) => {
    const user = token.accountId ? USERS[token.accountId] : USERS[token.clientId];
    return user ? { tenant: user.tenant, roles: user.roles, name: user.name } : undefined;
  },
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
