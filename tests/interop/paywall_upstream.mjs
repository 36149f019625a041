// An API written in Node with express, to sell through `paywall` (the twin of
// examples/paywall/demo/upstream.py): GET /weather/:city, POST /upload (length and SHA-256),
// GET /fail (500), anything else free. With PAYWALL_UPSTREAM_SECRET set, the payer headers
// are checked (HMAC-SHA256, as examples/paywall/src/payer.rs documents): a request whose
// Paywall-Signature does not verify gets 401, and the payer in the answer is a verified one.
//
// Usage: node paywall_upstream.mjs PORT   (prints "listening" once it listens)
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import express from "express";

const secret = process.env.PAYWALL_UPSTREAM_SECRET ?? "";
const SIGNED = ["paywall-payer", "paywall-amount", "paywall-asset", "paywall-intent",
  "paywall-payment", "paywall-reference", "content-length"];

function verifiedPayer(request) {
  const payer = request.get("paywall-payer") ?? null;
  const signature = request.get("paywall-signature");
  if (!secret || (payer === null && signature === undefined)) return payer;
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature ?? "");
  if (!match) throw new Error("no readable Paywall-Signature");
  if (Math.abs(Date.now() / 1000 - Number(match[1])) > 300) throw new Error("the signature is too old");
  const lines = ["paywall-v1", match[1], request.method, request.originalUrl,
    ...SIGNED.map((name) => request.get(name) ?? "")];
  const expected = createHmac("sha256", secret).update(lines.join("\n")).digest();
  if (!timingSafeEqual(expected, Buffer.from(match[2], "hex"))) {
    throw new Error("the signature does not match");
  }
  return payer;
}

const app = express();
app.use(express.raw({ type: () => true, limit: "2mb" }));
app.use((request, response, next) => {
  try {
    response.locals.seen = {
      payer: verifiedPayer(request),
      amount: request.get("paywall-amount") ?? null,
      intent: request.get("paywall-intent") ?? null,
      payment: request.get("paywall-payment") ?? null,
      reference: request.get("paywall-reference") ?? null,
    };
    next();
  } catch (error) {
    response.status(401).json({ error: error.message });
  }
});
app.get("/weather/:city", (request, response) => {
  response.json({ city: request.params.city, forecast: "sunny, 21°C", ...response.locals.seen });
});
app.post("/upload", (request, response) => {
  const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  response.json({ bytes: body.length, sha256: createHash("sha256").update(body).digest("hex"),
    ...response.locals.seen });
});
app.all("/fail", (request, response) => {
  response.status(500).json({ error: "the upstream failed", ...response.locals.seen });
});
app.use((request, response) => {
  response.json({ hello: "free", path: request.path, ...response.locals.seen });
});

const port = Number(process.argv[2] ?? 8000);
app.listen(port, "127.0.0.1", () => console.log("listening"));
