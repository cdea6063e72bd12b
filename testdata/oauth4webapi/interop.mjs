// An independent OAuth client, panva/oauth4webapi, driven against a running Latch by the
// integration test crates/latch-cli/tests/it/oauth4webapi.rs. Everything goes through the
// library's own API with its defaults: discovery (RFC 8414), token exchange (RFC 8693) with
// authorization_details (RFC 9396), DPoP (RFC 9449) with its nonce challenge, introspection
// (RFC 7662) and revocation (RFC 7009) with client_secret_basic (RFC 6749 §2.3.1 encoding).
//
// Input: one JSON argument {base, server_now, subject_token, client_id, client_secret,
// bound: {resource, environment, url}, plain: {resource, environment}}.
// Output: one JSON document on stdout with what the library saw; the Rust test asserts it.
// Exits non-zero on any unexpected error (printed to stderr).
import * as oauth from 'oauth4webapi';

const input = JSON.parse(process.argv[2]);
const insecure = { [oauth.allowInsecureRequests]: true }; // the test server listens on http://127.0.0.1
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

const b64uJson = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const claimsOf = (jwt) => b64uJson(jwt.split('.')[1]);

// Discovery (RFC 8414 §3): the issuer must be the base URL.
const issuer = new URL(input.base);
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
);

// The agent: a public client (token_endpoint_auth_methods_supported is ["none"]) on the
// server's clock (Latch runs on a fake clock in tests; proofs carry `iat`).
const agent = { client_id: 'oauth4webapi-agent' };
agent[oauth.clockSkew] = input.server_now - Math.floor(Date.now() / 1000);

// The resource server: authenticates to introspection and revocation with the library's default
// client authentication, client_secret_basic.
const rs = { client_id: input.client_id };
const rsAuth = oauth.ClientSecretBasic(input.client_secret);

function details(target) {
  return JSON.stringify([
    {
      type: 'latch_access',
      resource: target.resource,
      actions: ['read'],
      environment: target.environment,
      purpose: 'oauth4webapi interop',
    },
  ]);
}

// One token exchange; with a DPoP handle, a `use_dpop_nonce` answer is retried once with the
// nonce the library cached from the `DPoP-Nonce` header (RFC 9449 §8).
async function exchange(target, dpop) {
  const params = {
    subject_token: input.subject_token,
    subject_token_type: JWT,
    authorization_details: details(target),
  };
  const options = { ...insecure, ...(dpop ? { DPoP: dpop } : {}) };
  const attempt = async () =>
    oauth.processGenericTokenEndpointResponse(
      as,
      agent,
      await oauth.genericTokenEndpointRequest(as, agent, oauth.None(), EXCHANGE, params, options),
    );
  let challenged = null;
  try {
    return { challenged, response: await attempt() };
  } catch (err) {
    if (!dpop || !oauth.isDPoPNonceError(err)) throw err;
    challenged = err.error;
  }
  return { challenged, response: await attempt() };
}

// What a resource server receives from the agent: the agent "calls" it through the library
// (protectedResourceRequest) and the request is captured instead of sent.
async function resourceCall(token, dpop, url) {
  let seen;
  const capture = async (_url, init) => {
    seen = init.headers;
    return new Response('{}', { status: 200, headers: { 'content-type': 'application/json' } });
  };
  await oauth.protectedResourceRequest(token, 'GET', new URL(url), new Headers(), null, {
    DPoP: dpop,
    [oauth.customFetch]: capture,
  });
  return { authorization: seen.authorization, proof: seen.dpop };
}

// Introspection as the resource server, relaying the proof it got (Latch's extension for
// DPoP-bound tokens: dpop_proof, htm, htu).
async function introspect(token, relay, secretAuth = rsAuth) {
  const additionalParameters = relay ? { dpop_proof: relay.proof, htm: 'GET', htu: relay.url } : {};
  return oauth.processIntrospectionResponse(
    as,
    rs,
    await oauth.introspectionRequest(as, rs, secretAuth, token, { ...insecure, additionalParameters }),
  );
}

async function keyPair(name) {
  // WebCrypto keys; the public half must be extractable for the `jwk` header.
  return oauth.generateKeyPair(name === 'EdDSA' ? 'Ed25519' : name, { extractable: true });
}

const out = {
  metadata: {
    issuer: as.issuer,
    token_endpoint: as.token_endpoint,
    introspection_endpoint: as.introspection_endpoint,
    revocation_endpoint: as.revocation_endpoint,
    dpop_signing_alg_values_supported: as.dpop_signing_alg_values_supported,
    authorization_details_types_supported: as.authorization_details_types_supported,
    introspection_endpoint_auth_methods_supported: as.introspection_endpoint_auth_methods_supported,
  },
  dpop: [],
};

// DPoP with Ed25519 keys under both names (the library sends RFC 9864's `Ed25519`; `EdDSA` is
// set through its documented modifyAssertion hook) and ES256.
for (const name of ['Ed25519', 'EdDSA', 'ES256']) {
  const algs = [];
  const dpop = oauth.DPoP(agent, await keyPair(name), {
    [oauth.modifyAssertion]: (header) => {
      if (name === 'EdDSA') header.alg = 'EdDSA';
      algs.push(header.alg);
    },
  });
  const { challenged, response } = await exchange(input.bound, dpop);
  const token = response.access_token;
  const call = await resourceCall(token, dpop, input.bound.url);
  const active = await introspect(token, { proof: call.proof, url: input.bound.url });
  // The same token with a proof of another key (a thief's copy): inactive.
  const thief = oauth.DPoP(agent, await keyPair(name));
  const stolen = await resourceCall(token, thief, input.bound.url);
  const stolenAnswer = await introspect(token, { proof: stolen.proof, url: input.bound.url });
  await oauth.processRevocationResponse(
    await oauth.revocationRequest(as, rs, rsAuth, token, insecure),
  );
  const after = await resourceCall(token, dpop, input.bound.url);
  const revoked = await introspect(token, { proof: after.proof, url: input.bound.url });
  out.dpop.push({
    name,
    proof_algs: [...new Set(algs)],
    proof_header_alg: b64uJson(call.proof.split('.')[0]).alg,
    challenged,
    token_type: response.token_type,
    authorization_details: response.authorization_details,
    jkt: await dpop.calculateThumbprint(),
    cnf_jkt: claimsOf(token).cnf?.jkt,
    authorization_scheme: call.authorization.split(' ')[0],
    introspection: active,
    stolen_introspection: stolenAnswer,
    revoked_introspection: revoked,
  });
}

// A bearer token (no DPoP), introspected and revoked the same way.
{
  const { response } = await exchange(input.plain, null);
  const token = response.access_token;
  const before = await introspect(token);
  let wrong;
  try {
    await introspect(token, null, oauth.ClientSecretBasic(`${input.client_secret}x`));
    wrong = { status: 200 };
  } catch (err) {
    wrong = { status: err.status ?? err.cause?.status, error: err.error ?? err.code };
  }
  await oauth.processRevocationResponse(
    await oauth.revocationRequest(as, rs, rsAuth, token, insecure),
  );
  out.bearer = {
    token_type: response.token_type,
    scope: response.scope,
    authorization_details: response.authorization_details,
    introspection: before,
    wrong_secret: wrong,
    revoked_introspection: await introspect(token),
  };
}

process.stdout.write(JSON.stringify(out));
