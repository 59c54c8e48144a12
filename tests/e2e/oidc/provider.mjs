// A real OpenID Connect provider (npm oidc-provider) for the browser tests, on a loopback port.
// Its built-in development sign-in pages accept any user name; the account's groups claim is
// taken from GROUPS (a JSON object: user name -> list of groups).
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI [POST_LOGOUT_URI]
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, postLogout] = process.argv.slice(2);
const groups = JSON.parse(process.env.GROUPS || "{}");

const provider = new Provider(`http://localhost:${port}`, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: postLogout ? [postLogout] : [],
      response_types: ["code"],
      grant_types: ["authorization_code"],
    },
  ],
  claims: { openid: ["sub"], email: ["email"], profile: ["name"], groups: ["groups"] },
  scopes: ["openid", "email", "profile", "groups"],
  conformIdTokenClaims: false, // put the claims in the ID token, which is what st.user reads
  pkce: { required: () => false },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test`, name: id, groups: groups[id] || [] };
      },
    };
  },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc provider on ${port}`));
