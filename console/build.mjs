// Bundles the console (src/main.js and its pinned npm packages) with esbuild into dist/, which is
// committed and embedded in the server binary. Run after changing package.json or src/:
//   npm ci --ignore-scripts && npm run build
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
mkdirSync(join(dist, "licenses"), { recursive: true });

const result = await build({
  entryPoints: [join(here, "src/main.js")],
  outfile: join(dist, "console.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome111", "firefox115", "safari16.4"],
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
});
copyFileSync(join(here, "src/index.html"), join(dist, "index.html"));
copyFileSync(join(here, "src/console.css"), join(dist, "console.css"));
// The license of every package that went into the bundle.
const bundled = new Set(
  Object.keys(result.metafile.inputs)
    .map((input) => input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1])
    .filter(Boolean),
);
for (const name of [...bundled].sort()) {
  const directory = join(here, "node_modules", name);
  const license = readdirSync(directory).find((file) => /^licen[cs]e/i.test(file));
  if (!license) throw new Error(`${name} has no license file`);
  copyFileSync(join(directory, license), join(dist, "licenses", `${name.replace("/", "-")}.LICENSE`));
}

// Fail loudly if anything would reach out to another host at run time.
for (const target of ["console.js", "console.css", "index.html"]) {
  const text = readFileSync(join(dist, target), "utf8");
  const remote = text.match(/(?:src|href)\s*=\s*["']https?:\/\//g) || text.match(/@import\s+url\(["']?https?:/g);
  if (remote) throw new Error(`${target} loads remote assets: ${remote.join(", ")}`);
}
console.log(`console assets written to ${dist}`);
