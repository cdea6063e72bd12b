// A real OpenID Provider for Latch's sign-in tests: panva's oidc-provider (OpenID Certified),
// configured with test users, their groups, and two clients.
//
//   node server.mjs [port]            (or OIDC_PORT; 0 or nothing picks a free port)
//
// Environment:
//   OIDC_PORT                   loopback port (default 0: any free port)
//   LATCH_CONSOLE_REDIRECT_URI  the broker's console callback (default
//                               http://127.0.0.1:8080/console/callback); comma-separated for several
//   LATCH_CONSOLE_SECRET        the `latch-console` client secret (default `console-secret-for-tests`)
//   LATCH_RESOURCE              the resource indicator (RFC 8707) whose access tokens are JWTs for
//                               Latch (an absolute URI; default `urn:latch`, or the broker's URL)
//
// When it listens it prints one line `issuer=http://127.0.0.1:<port>` on stdout.
//
// Users (any password is accepted: oidc-provider's development interactions):
//   alice  no groups            bob   prod-approvers
//   carol  latch-admins         dave  prod-approvers
//   erin   prod-approvers, latch-admins
//
// Clients:
//   latch-console  confidential (client_secret_basic), authorization code + PKCE (S256);
//                  post_logout_redirect_uris: each redirect URI with `/callback` replaced by
//                  `/logout` (RP-Initiated Logout 1.0, the console's signed-out page)
//   latch-cli      public native client: loopback redirect (any port, RFC 8252) with PKCE, device
//                  authorization grant (RFC 8628), refresh tokens
//
// ID tokens carry `groups` (scope `groups`), `name` and `email`. Access tokens asked for resource
// LATCH_RESOURCE are JWTs (RFC 9068) with aud = that resource, `sub` and `groups`, so a CLI can
// present them to the broker, whose human issuer verifies them.
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const redirectUris = (process.env.LATCH_CONSOLE_REDIRECT_URI ?? 'http://127.0.0.1:8080/console/callback')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const consoleSecret = process.env.LATCH_CONSOLE_SECRET ?? 'console-secret-for-tests';
const latchResource = process.env.LATCH_RESOURCE ?? 'urn:latch';

const USERS = {
  alice: { name: 'Alice Agentowner', groups: [] },
  bob: { name: 'Bob Approver', groups: ['prod-approvers'] },
  carol: { name: 'Carol Admin', groups: ['latch-admins'] },
  dave: { name: 'Dave Approver', groups: ['prod-approvers'] },
  erin: { name: 'Erin Both', groups: ['prod-approvers', 'latch-admins'] },
};

function account(id) {
  const u = USERS[id] ?? { name: id, groups: [] };
  return {
    accountId: id,
    async claims() {
      return { sub: id, name: u.name, email: `${id}@example.test`, groups: u.groups };
    },
  };
}

const configuration = {
  clients: [
    {
      client_id: 'latch-console',
      client_secret: consoleSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: redirectUris.map((u) => u.replace(/\/callback$/, '/logout')),
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    {
      client_id: 'latch-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      id_token_signed_response_alg: 'RS256',
    },
  ],
  // PKCE (S256 is the only method oidc-provider offers) for every client.
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'], groups: ['groups'] },
  // Scope claims go into the ID token even when an access token is issued too.
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => account(id),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => (oneOf ? oneOf[0] : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== latchResource) throw new Error('unknown resource');
        return {
          scope: 'latch',
          audience: latchResource,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Groups in JWT access tokens too (RFC 9068 §2.2.3.1).
  extraTokenClaims: async (_ctx, token) => {
    if (!token.accountId) return undefined;
    const u = USERS[token.accountId];
    return { groups: u ? u.groups : [] };
  },
  // Consent is implied: the grant covers what the client asked for (test provider only).
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid offline_access profile email groups');
    grant.addOIDCClaims(['sub', 'name', 'email', 'groups']);
    grant.addResourceScope(latchResource, 'latch');
    await grant.save();
    return grant;
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    DeviceCode: 600,
    RefreshToken: 86400,
    Interaction: 600,
    Session: 3600,
    Grant: 86400,
  },
  cookies: { keys: ['latch-test-oidc-provider-cookie-key'] },
  // Loopback http for tests.
  clientBasedCORS: () => true,
};

const server = (await import('node:http')).createServer();
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  const issuer = `http://127.0.0.1:${bound}`;
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`issuer=${issuer}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
