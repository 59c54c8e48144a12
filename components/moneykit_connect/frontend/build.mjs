// Bundles src/index.js and @moneykit/connect into dist/index.js, the single ES module
// that the Python wrapper hands to st.components.v2.component as inline JavaScript.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const EXPECTED_LAUNCHER = "0.3.28";

const launcher = JSON.parse(
  await readFile(here("./node_modules/@moneykit/connect/package.json"), "utf8"),
);
if (launcher.version !== EXPECTED_LAUNCHER) {
  throw new Error(
    `@moneykit/connect ${launcher.version} is installed, ${EXPECTED_LAUNCHER} is required: run npm ci`,
  );
}

// Streamlit treats a one-line js string without a newline that looks path-like (it
// contains "/") as a file path. A minified bundle is one line, so it starts with this
// comment line to be recognised as inline code.
const banner = `// Linkdesk MoneyKit Connect component, bundling @moneykit/connect ${EXPECTED_LAUNCHER}. Built by "npm run build"; do not edit.`;

const outfile = here("./dist/index.js");
await build({
  entryPoints: [here("./src/index.js")],
  outfile,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  banner: { js: banner },
  logLevel: "info",
});

const bundled = await readFile(outfile, "utf8");
const firstLine = bundled.split("\n", 1)[0];
if (!firstLine.startsWith("//") || !bundled.includes("\n")) {
  throw new Error("dist/index.js must start with a comment line");
}
