// Copies the prebuilt UMD bundles of the pinned npm packages and our page into dist/, which is
// committed and embedded in the server binary. Run after changing package.json or src/:
//   npm ci --ignore-scripts && npm run build
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
mkdirSync(join(dist, "licenses"), { recursive: true });

const files = {
  "react.production.min.js": "node_modules/react/umd/react.production.min.js",
  "react-dom.production.min.js": "node_modules/react-dom/umd/react-dom.production.min.js",
  "graphiql.min.js": "node_modules/graphiql/dist/index.umd.js",
  "graphiql.min.css": "node_modules/graphiql/dist/style.css",
  "playground.js": "src/playground.js",
  "index.html": "src/index.html",
  "introspection.graphql": "src/introspection.graphql",
  "licenses/graphiql.LICENSE": "node_modules/graphiql/LICENSE",
  "licenses/react.LICENSE": "node_modules/react/LICENSE",
  "licenses/react-dom.LICENSE": "node_modules/react-dom/LICENSE",
};
for (const [target, source] of Object.entries(files)) {
  copyFileSync(join(here, source), join(dist, target));
}
// Fail loudly if a bundle would reach out to a CDN at run time.
for (const target of ["graphiql.min.js", "graphiql.min.css", "index.html", "playground.js"]) {
  const text = readFileSync(join(dist, target), "utf8");
  const remote = text.match(/(?:src|href)\s*=\s*["']https?:\/\//g) || text.match(/@import\s+url\(["']?https?:/g);
  if (remote) throw new Error(`${target} loads remote assets: ${remote.join(", ")}`);
}
console.log(`playground assets written to ${dist}`);
