// Headless Chromium (Debian's, or $CHROMIUM) with every request beyond this machine blocked and
// recorded, and the page's uncaught errors collected: what each browser test starts from.
import { chromium } from "playwright-core";

export async function openOffline({ viewport = { width: 1400, height: 900 }, locale = "en-US" } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport, locale });
  const blocked = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1" || url.hostname === "localhost") return route.continue();
    blocked.push(url.href);
    return route.abort();
  });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  return { browser, page, blocked, pageErrors };
}
