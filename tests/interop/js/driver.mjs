// The relying party's side of tests/interop: a strict third-party OpenID Connect client
// (openid-client, with its defaults) driving authsvc. The Python tests play the browser and the
// person; everything a relying service does is done here.
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "cmd": "discover", ...}  ->  {"id": 1, "ok": true, "result": {...}}
//                                      or  {"id": 1, "ok": false, "error": {...}}
// Nothing else is ever written on stdout (diagnostics go to stderr).

import readline from 'node:readline';
import * as oidc from 'openid-client';
import * as jose from 'jose';

/** name -> { config, issuer, jwks } */
const clients = new Map();
/** state -> what the authorization request was made with (PKCE verifier, nonce, ...) */
const pending = new Map();
/** what the next token endpoint response goes through (the client-strictness tests) */
let tamper = null;

// Every request of every client goes through here: only to let a test tamper with a response,
// after the provider sent it, to show that the client's checks are live.
async function fetchThrough(url, options) {
  const response = await fetch(url, options);
  const what = tamper;
  if (what === null || !String(url).endsWith('/token')) {
    return response;
  }
  tamper = null;
  const body = await response.json();
  if (what === 'id_token_signature' && typeof body.id_token === 'string') {
    const [h, p, s] = body.id_token.split('.');
    const sig = Buffer.from(s, 'base64url');
    sig[sig.length >> 1] ^= 0x01;
    body.id_token = `${h}.${p}.${sig.toString('base64url')}`;
  }
  return new Response(JSON.stringify(body), {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

function client(name) {
  const found = clients.get(name);
  if (!found) {
    throw new Error(`no client named ${JSON.stringify(name)}: discover it first`);
  }
  return found;
}

async function clientAuthentication(spec) {
  switch (spec.auth) {
    case 'client_secret_basic':
      return oidc.ClientSecretBasic(spec.client_secret);
    case 'client_secret_post':
      return oidc.ClientSecretPost(spec.client_secret);
    case 'client_secret_jwt':
      return oidc.ClientSecretJwt(spec.client_secret);
    case 'private_key_jwt': {
      // openid-client names the algorithm after the key; an Ed25519 key signs "Ed25519"
      // (RFC 9864) unless told to say "EdDSA", the name discovery advertises
      const jwk = spec.private_jwk;
      const key = await jose.importJWK(jwk, jwk.alg);
      const options = {};
      if (jwk.alg === 'EdDSA') {
        options[oidc.modifyAssertion] = (header) => {
          header.alg = 'EdDSA';
        };
      }
      return oidc.PrivateKeyJwt({ key, kid: jwk.kid }, options);
    }
    case 'none':
      return oidc.None();
    default:
      throw new Error(`unknown client authentication ${spec.auth}`);
  }
}

const commands = {
  // Discovery (OpenID Connect Discovery 1.0): openid-client checks that the metadata's issuer
  // is exactly the one asked for. Non-repudiation checks make it verify the signature of every
  // ID token against the jwks_uri (by default it trusts the TLS channel instead).
  async discover({ name, issuer, client_id, client_secret, auth, private_jwk, id_token_alg }) {
    const metadata = {
      client_id,
      // strict: the ID token must be signed with exactly this algorithm, and carry auth_time
      id_token_signed_response_alg: id_token_alg,
      require_auth_time: true,
    };
    const config = await oidc.discovery(
      new URL(issuer),
      client_id,
      metadata,
      await clientAuthentication({ auth, client_secret, private_jwk }),
      {
        execute: [oidc.allowInsecureRequests, oidc.enableNonRepudiationChecks],
        [oidc.customFetch]: fetchThrough,
      },
    );
    const server = config.serverMetadata();
    const jwks = jose.createRemoteJWKSet(new URL(server.jwks_uri));
    clients.set(name, { config, issuer: server.issuer, jwks });
    return { metadata: server, client: config.clientMetadata() };
  },

  // The authorization request: PKCE S256, state and nonce, all made here.
  async authorize({ name, redirect_uri, scope, params = {}, max_age, without_nonce = false }) {
    const { config } = client(name);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    // without one, openid-client requires the ID token to carry no nonce at all
    const nonce = without_nonce ? undefined : oidc.randomNonce();
    const parameters = {
      redirect_uri,
      scope,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      ...(nonce ? { nonce } : {}),
      ...params,
    };
    if (max_age !== undefined && max_age !== null) {
      parameters.max_age = String(max_age);
    }
    pending.set(state, { name, verifier, nonce, max_age });
    return { url: oidc.buildAuthorizationUrl(config, parameters).href, state, nonce: nonce ?? null };
  },

  // The redirect back: RFC 9207 iss, state, then the code exchange with the PKCE verifier and
  // the full ID token validation (signature with the client's algorithm, iss, aud, exp, iat,
  // nonce, auth_time, max_age); the access token is checked as an RFC 9068 JWT.
  async callback({ name, state, url, tamper: how, expected_nonce }) {
    const { config, issuer, jwks } = client(name);
    const request = pending.get(state);
    if (!request || request.name !== name) {
      throw new Error(`no authorization request with state ${state} for ${name}`);
    }
    pending.delete(state);
    const callbackUrl = new URL(url);
    if (how === 'iss') {
      callbackUrl.searchParams.set('iss', `${issuer}/elsewhere`);
    }
    tamper = how === 'id_token_signature' ? how : null;
    const checks = {
      pkceCodeVerifier: request.verifier,
      expectedState: state,
      expectedNonce: expected_nonce ?? request.nonce,
      idTokenExpected: true,
    };
    if (request.max_age !== undefined && request.max_age !== null) {
      checks.maxAge = request.max_age;
    }
    try {
      const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, checks);
      return await describeTokens(tokens, issuer, jwks);
    } finally {
      tamper = null;
    }
  },

  async userinfo({ name, access_token, sub }) {
    const { config } = client(name);
    return await oidc.fetchUserInfo(config, access_token, sub);
  },

  async refresh({ name, refresh_token }) {
    const { config, issuer, jwks } = client(name);
    const tokens = await oidc.refreshTokenGrant(config, refresh_token);
    return await describeTokens(tokens, issuer, jwks);
  },

  async client_credentials({ name, scope }) {
    const { config, issuer, jwks } = client(name);
    const tokens = await oidc.clientCredentialsGrant(config, scope ? { scope } : {});
    return await describeTokens(tokens, issuer, jwks);
  },

  async introspect({ name, token, hint }) {
    const { config } = client(name);
    return await oidc.tokenIntrospection(config, token, hint ? { token_type_hint: hint } : {});
  },

  async revoke({ name, token, hint }) {
    const { config } = client(name);
    await oidc.tokenRevocation(config, token, hint ? { token_type_hint: hint } : {});
    return { revoked: true };
  },

  async end_session_url({ name, id_token_hint, post_logout_redirect_uri, state }) {
    const { config } = client(name);
    const parameters = { id_token_hint };
    if (post_logout_redirect_uri) {
      parameters.post_logout_redirect_uri = post_logout_redirect_uri;
    }
    if (state) {
      parameters.state = state;
    }
    return { url: oidc.buildEndSessionUrl(config, parameters).href };
  },

  // A back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6), as a relying
  // service must validate it: signature from the jwks_uri with its ID token algorithm, typ,
  // iss, aud, iat, jti, events, sid or sub, and no nonce.
  async logout_token({ name, token, id_token_alg }) {
    const { config, issuer, jwks } = client(name);
    const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
      issuer,
      audience: config.clientMetadata().client_id,
      algorithms: [id_token_alg],
      typ: 'logout+jwt',
      requiredClaims: ['iat', 'jti', 'events'],
      maxTokenAge: '2 minutes',
    });
    const event = payload.events?.['http://schemas.openid.net/event/backchannel-logout'];
    if (typeof event !== 'object' || event === null || Array.isArray(event)) {
      throw new Error('logout token: events has no backchannel-logout member');
    }
    if (payload.nonce !== undefined) {
      throw new Error('logout token: a nonce is forbidden');
    }
    if (payload.sid === undefined && payload.sub === undefined) {
      throw new Error('logout token: neither sid nor sub');
    }
    return { header: protectedHeader, claims: payload };
  },
};

// The tokens of a token endpoint response, as a test wants to see them: the ID token's claims
// (validated by openid-client) and header, and the access token verified as an RFC 9068 JWT.
async function describeTokens(tokens, issuer, jwks) {
  const result = {
    access_token: tokens.access_token,
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    scope: tokens.scope,
    refresh_token: tokens.refresh_token,
    id_token: tokens.id_token,
  };
  if (tokens.id_token) {
    result.id_token_claims = tokens.claims();
    result.id_token_header = jose.decodeProtectedHeader(tokens.id_token);
  }
  const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer,
    typ: 'at+jwt', // RFC 9068 §4: application/at+jwt, and nothing else
    algorithms: ['ES256', 'RS256', 'PS256'],
    requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id', 'aud'],
  });
  result.access_token_claims = payload;
  result.access_token_header = protectedHeader;
  return result;
}

// Errors as the tests want them: openid-client's class, code, and the server's OAuth error.
function describeError(err) {
  const out = { name: err?.name, message: err?.message, code: err?.code };
  // the whole chain of messages: openid-client wraps oauth4webapi's errors
  const reasons = [];
  for (let e = err; e instanceof Error && reasons.length < 5; e = e.cause) {
    reasons.push(e.message);
  }
  out.reason = reasons.join(': ');
  for (const field of ['error', 'error_description', 'status']) {
    if (err?.[field] !== undefined) {
      out[field] = err[field];
    }
  }
  if (err?.cause instanceof URLSearchParams) {
    out.cause = Object.fromEntries(err.cause);
  } else if (err?.cause instanceof Error) {
    out.cause = { name: err.cause.name, message: err.cause.message, code: err.cause.code };
  } else if (err?.cause !== undefined) {
    try {
      out.cause = JSON.parse(JSON.stringify(err.cause));
    } catch {
      out.cause = String(err.cause);
    }
  }
  return out;
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) {
    continue;
  }
  let message;
  let answer;
  try {
    message = JSON.parse(line);
    const run = commands[message.cmd];
    if (!run) {
      throw new Error(`unknown command ${message.cmd}`);
    }
    answer = { id: message.id, ok: true, result: (await run(message)) ?? null };
  } catch (err) {
    answer = { id: message?.id ?? null, ok: false, error: describeError(err) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
