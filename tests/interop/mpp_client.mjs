// Pays one URL with MPP `charge` (method "stellar") the way the Stellar MPP SDK client does:
// the official `mppx` package parses every `WWW-Authenticate: Payment` challenge of the 402 and
// serializes the credential; `@stellar/stellar-sdk` builds and signs the transfer. Prints
// {challenges, status, body, receipt} as JSON.
//
// Environment: URL_TO_PAY, RPC_URL (https), PAYER_SECRET (S…), MODE ("sponsored" | "push").
import { Challenge, Credential } from "mppx";
import {
  Account,
  BASE_FEE,
  Keypair,
  Networks,
  Operation,
  TransactionBuilder,
  authorizeEntry,
  nativeToScVal,
  rpc,
  xdr,
} from "@stellar/stellar-sdk";

const ZERO_SOURCE = "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF";

function transfer(source, request, payer, expires) {
  return new TransactionBuilder(source, { fee: BASE_FEE, networkPassphrase: Networks.TESTNET })
    .addOperation(
      Operation.invokeContractFunction({
        contract: request.currency,
        function: "transfer",
        args: [
          nativeToScVal(payer.publicKey(), { type: "address" }),
          nativeToScVal(request.recipient, { type: "address" }),
          nativeToScVal(BigInt(request.amount), { type: "i128" }),
        ],
      }),
    )
    .setTimebounds(0, expires)
    .build();
}

async function sponsored(server, request, payer, expires) {
  // The SDK's sponsored pull: all-zeros source, only the payer's auth entries signed.
  const prepared = await server.prepareTransaction(
    transfer(new Account(ZERO_SOURCE, "-1"), request, payer, expires),
  );
  const latest = await server.getLatestLedger();
  const now = Math.floor(Date.now() / 1000);
  const validUntil = latest.sequence + Math.ceil((expires - now) / 5);
  const envelope = prepared.toEnvelope();
  const op = envelope.v1().tx().operations()[0].body().invokeHostFunctionOp();
  const signed = [];
  for (const entry of op.auth()) {
    const credentials = entry.credentials();
    if (credentials.switch() === xdr.SorobanCredentialsType.sorobanCredentialsAddress()) {
      signed.push(await authorizeEntry(entry, payer, validUntil, Networks.TESTNET));
    } else {
      signed.push(entry);
    }
  }
  op.auth(signed);
  return { type: "transaction", transaction: envelope.toXDR("base64") };
}

async function push(server, request, payer, expires, challengeId) {
  // The SDK's push: the payer submits its own transfer, then proves it with signedHash.
  const account = await server.getAccount(payer.publicKey());
  const prepared = await server.prepareTransaction(transfer(account, request, payer, expires));
  prepared.sign(payer);
  const sent = await server.sendTransaction(prepared);
  if (sent.status === "ERROR" || sent.status === "DUPLICATE") {
    throw new Error(`sendTransaction: ${sent.status}`);
  }
  const final = await server.pollTransaction(sent.hash, { attempts: 60 });
  if (final.status !== "SUCCESS") throw new Error(`transaction ${final.status}`);
  const hash = sent.hash.toLowerCase();
  const sourceSignature = payer.sign(Buffer.from(`${challengeId}:${hash}`)).toString("hex");
  return { type: "signedHash", hash, sourceSignature };
}

export async function pay(url, { rpcUrl, payerSecret, mode }) {
  const first = await fetch(url);
  if (first.status !== 402) throw new Error(`expected 402, got ${first.status}`);
  const challenges = Challenge.fromResponseList(first);
  const challenge = challenges.find((c) => c.method === "stellar" && c.intent === "charge");
  if (!challenge) throw new Error("no stellar charge challenge");
  const request = challenge.request;
  const types = request.methodDetails?.credentialTypes;
  const wanted = mode === "push" ? "signedHash" : "transaction";
  if (types && !types.includes(wanted)) throw new Error(`${wanted} not offered`);
  if (mode === "sponsored" && request.methodDetails?.feePayer !== true) {
    throw new Error("fees are not sponsored");
  }
  const payer = Keypair.fromSecret(payerSecret);
  const server = new rpc.Server(rpcUrl);
  const expires = challenge.expires
    ? Math.floor(new Date(challenge.expires).getTime() / 1000)
    : Math.floor(Date.now() / 1000) + 180;
  const payload =
    mode === "push"
      ? await push(server, request, payer, expires, challenge.id)
      : await sponsored(server, request, payer, expires);
  const authorization = Credential.serialize(
    Credential.from({
      challenge,
      payload,
      source: `did:pkh:stellar:testnet:${payer.publicKey()}`,
    }),
  );
  const paid = await fetch(url, { headers: { authorization } });
  return {
    challenges: challenges.map((c) => ({ id: c.id, method: c.method, intent: c.intent })),
    status: paid.status,
    body: await paid.text(),
    receipt: paid.headers.get("payment-receipt"),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { URL_TO_PAY, RPC_URL, PAYER_SECRET, MODE } = process.env;
  const result = await pay(URL_TO_PAY, { rpcUrl: RPC_URL, payerSecret: PAYER_SECRET, mode: MODE });
  console.log(JSON.stringify(result));
}
