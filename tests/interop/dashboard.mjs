// Drives stoka's usage dashboard in headless Chromium over the DevTools protocol
// (`puppeteer-core`, with the system's Chromium): pastes a secret key, presses "Load usage",
// waits for the page to settle, reads what it shows, saves a screenshot, then presses
// "Forget key". Prints what it saw as JSON.
//
// Environment: DASHBOARD_URL (the page, with its query), SECRET (S…), CHROMIUM (the browser
// binary), SCREENSHOT (where to save the PNG).
import puppeteer from "puppeteer-core";

const { DASHBOARD_URL, SECRET, CHROMIUM, SCREENSHOT } = process.env;
const TIMEOUT_MS = 120_000;

function loopback(url) {
  const { protocol, hostname } = new URL(url);
  if (protocol === "data:" || protocol === "about:" || protocol === "blob:") return true;
  return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
}

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  // We run as root (and in a user namespace): Chromium's sandbox needs an unprivileged user.
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  defaultViewport: { width: 1100, height: 900 },
  protocolTimeout: TIMEOUT_MS,
  timeout: TIMEOUT_MS,
});
const result = { requests: [], outside: [], consoleErrors: [], pageErrors: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("request", (request) => {
    const url = request.url();
    result.requests.push(`${request.method()} ${url}`);
    if (!loopback(url)) result.outside.push(url);
  });
  page.on("console", (message) => {
    if (message.type() === "error") {
      result.consoleErrors.push(`${message.text()} (${message.location().url ?? ""})`);
    }
  });
  page.on("pageerror", (error) => result.pageErrors.push(String(error)));

  const response = await page.goto(DASHBOARD_URL, { waitUntil: "load" });
  result.pageStatus = response.status();
  result.initialState = await page.$eval("body", (body) => body.dataset.state);
  result.days = await page.$eval("#days", (input) => input.value);

  await page.type("#secret", SECRET);
  await page.click("#load");
  await page.waitForFunction(
    () => ["loaded", "error"].includes(document.body.dataset.state),
  );
  Object.assign(
    result,
    await page.evaluate(() => {
      const bars = [...document.querySelectorAll("#chart rect.bar")];
      const series = {};
      for (const bar of bars) {
        const key = bar.dataset.series;
        (series[key] ??= []).push({ day: bar.dataset.day, value: bar.dataset.value });
      }
      const totals = {};
      for (const dd of document.querySelectorAll("#totals dd[data-field]")) {
        totals[dd.dataset.field] = dd.dataset.value;
      }
      return {
        state: document.body.dataset.state,
        status: document.getElementById("status").textContent,
        resultsHidden: document.getElementById("results").hidden,
        wallet: document.getElementById("wallet").textContent,
        chartDays: document.getElementById("chart").dataset.days,
        bars: bars.length,
        series,
        totals,
        tableRows: document.querySelectorAll("#days-table tbody tr").length,
        keptInSession: sessionStorage.getItem("stoka.dashboard.secret") !== null,
        keptInLocal: localStorage.length,
      };
    }),
  );
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  await page.click("#forget");
  result.afterForget = await page.evaluate(() => ({
    state: document.body.dataset.state,
    secret: document.getElementById("secret").value,
    resultsHidden: document.getElementById("results").hidden,
    keptInSession: sessionStorage.getItem("stoka.dashboard.secret") !== null,
    bars: document.querySelectorAll("#chart rect.bar").length,
  }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
