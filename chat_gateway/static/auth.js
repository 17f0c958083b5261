// Switchboard sign-in. The page learns how to sign in from GET /v1/auth/config:
//   none  - local mode: no credentials (the API trusts loopback callers);
//   token - a pasted API token;
//   oidc  - OpenID Connect, authorization code + PKCE (S256, Web Crypto) with the
//           public client the config names; the redirect comes back to this page.
// The access token lives in sessionStorage (this tab only, gone when it closes) and
// goes out only as `Authorization: Bearer` — never in a URL, so never in a log.
"use strict";

const Auth = (() => {
  const TOKEN_KEY = "sb.auth";
  const PENDING_KEY = "sb.oidc.pending";
  let config = { sign_in: "none" };
  let discovery = null;

  // Thrown when the page must ask the user to sign in; the message says why.
  class SignInNeeded extends Error {}

  function stored() {
    try { return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null"); } catch { return null; }
  }

  function expired() {
    const saved = stored();
    return Boolean(saved && saved.expires_at && saved.expires_at <= Date.now());
  }

  function token() {
    const saved = stored();
    return saved && !expired() ? saved.token : null;
  }

  function save(value, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + Number(expiresIn) * 1000 : null;
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token: value, expires_at: expiresAt }));
  }

  function forget() {
    sessionStorage.removeItem(TOKEN_KEY);
  }

  function headers(extra = {}) {
    const value = token();
    return value ? { ...extra, Authorization: `Bearer ${value}` } : { ...extra };
  }

  // ---- PKCE (RFC 7636) with the Web Crypto API -----------------------------------

  function base64url(bytes) {
    let text = "";
    for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomText() {
    return base64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  async function s256(verifier) {
    if (!crypto.subtle) throw new Error("this page needs https (or loopback) to sign in");
    return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  }

  function redirectUri() {
    return location.origin + location.pathname;
  }

  async function providerMetadata() {
    if (discovery) return discovery;
    const issuer = config.oidc.issuer.replace(/\/$/, "");
    const response = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (!response.ok) throw new Error(`the identity provider answered ${response.status}`);
    discovery = await response.json();
    return discovery;
  }

  async function startOidc() {
    const metadata = await providerMetadata();
    const verifier = randomText();
    const state = randomText();
    sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, hash: location.hash }));
    const params = new URLSearchParams({
      response_type: "code",
      client_id: config.oidc.client_id,
      redirect_uri: redirectUri(),
      scope: config.oidc.scopes,
      state,
      code_challenge: await s256(verifier),
      code_challenge_method: "S256",
    });
    if (config.oidc.resource) params.set("resource", config.oidc.resource);
    location.assign(`${metadata.authorization_endpoint}?${params}`);
  }

  // The provider sent the browser back with ?code=…&state=… (or ?error=…).
  async function finishOidc() {
    const answer = new URLSearchParams(location.search);
    if (!answer.has("code") && !answer.has("error")) return;
    const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
    sessionStorage.removeItem(PENDING_KEY);
    history.replaceState(null, "", location.pathname + ((pending && pending.hash) || ""));
    if (answer.has("error")) {
      throw new Error(`sign-in refused: ${answer.get("error_description") || answer.get("error")}`);
    }
    if (!pending || pending.state !== answer.get("state")) {
      throw new Error("the sign-in answer does not match this tab's request: sign in again");
    }
    const issuer = answer.get("iss");
    if (issuer && issuer.replace(/\/$/, "") !== config.oidc.issuer.replace(/\/$/, "")) {
      throw new Error("the sign-in answer came from another issuer: sign in again");
    }
    const metadata = await providerMetadata();
    const form = new URLSearchParams({
      grant_type: "authorization_code",
      code: answer.get("code"),
      redirect_uri: redirectUri(),
      client_id: config.oidc.client_id,
      code_verifier: pending.verifier,
    });
    if (config.oidc.resource) form.set("resource", config.oidc.resource);
    const response = await fetch(metadata.token_endpoint, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.access_token) {
      throw new Error(`sign-in failed: ${body.error_description || body.error || response.status}`);
    }
    save(body.access_token, body.expires_in);
  }

  // ---- what the page calls ------------------------------------------------------

  async function me() {
    const response = await fetch("/v1/me", { headers: headers() });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) { forget(); throw new SignInNeeded(body.detail || "sign in"); }
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body;
  }

  // Returns who is signed in, or throws SignInNeeded (with why) for the page to ask.
  async function init() {
    const response = await fetch("/v1/auth/config");
    if (!response.ok) throw new Error(`GET /v1/auth/config: HTTP ${response.status}`);
    config = await response.json();
    if (config.sign_in === "oidc") await finishOidc();
    if (config.sign_in === "none") return me();
    if (expired()) { forget(); throw new SignInNeeded("your sign-in has expired: sign in again"); }
    if (!token()) throw new SignInNeeded("");
    return me();
  }

  async function signInWithToken(value) {
    save(value.trim(), null);
    return me();
  }

  function signOut() {
    forget();
    location.reload();
  }

  return {
    init, headers, me, signInWithToken, startOidc, signOut, forget, SignInNeeded,
    get mode() { return config.sign_in; },
    get expired() { return expired(); },
  };
})();
