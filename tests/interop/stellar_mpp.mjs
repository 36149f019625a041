// The Stellar MPP SDK's client methods (`@stellar/mpp` 0.7.0: `stellar.charge` and
// `stellar.channel`), for the interop tests.
//
// That SDK is not on the package registry, so this file is written after its public source
// (sdk/src/charge/Methods.ts and client/Charge.ts, sdk/src/channel/Methods.ts, client/Channel.ts
// and commitment.ts): the same method names and schemas, and the same client choices:
//
// - charge: refuses push when fees are sponsored, requires `signedHash` among the advertised
//   `credentialTypes` for push and `transaction` (when a list is given) for pull; sponsored pull
//   builds the transfer from the all-zeros source, prepares it, and signs only the address
//   authorization entries, valid until `latest + ceil((expires - now) / 5)`; unsponsored pull
//   signs the prepared transaction of the payer's own account; push submits it, polls it to
//   SUCCESS and signs `"{challenge id}:{lowercase hash}"`; `source` is
//   `did:pkh:<network>:<payer>`.
// - channel: pinned channels only; the cumulative amount is the larger of the locally stored one
//   and the server's `methodDetails.cumulativeAmount`, plus the request's amount;
//   `prepare_commitment` is simulated from the all-zeros source and its bytes checked (domain,
//   channel, amount, network) before the commitment key signs them; the amount is stored.
//
// They are built on the real mppx package handed in (`Method.from`, `Method.toClient`,
// `Credential.serialize`, `Store.memory`, its zod), so `Mppx.create({ methods }).fetch` of that
// mppx version drives them exactly as it drives the SDK's.
import {
  Account,
  Address,
  BASE_FEE,
  Contract,
  Networks,
  TransactionBuilder,
  authorizeEntry,
  hash,
  nativeToScVal,
  rpc,
  scValToNative,
  xdr,
} from "@stellar/stellar-sdk";

const ALL_ZEROS = "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF";
const LEDGER_CLOSE_SECONDS = 5;
const DEFAULT_TIMEOUT_SECONDS = 180;
const PASSPHRASES = { "stellar:testnet": Networks.TESTNET, "stellar:pubnet": Networks.PUBLIC };

function networkOf(value) {
  if (value == null) return "stellar:testnet";
  if (typeof value === "string" && value in PASSPHRASES) return value;
  throw new Error(`Unsupported Stellar network identifier: "${value}"`);
}

/** `{ charge(parameters), channel(parameters) }` over the mppx module `mppx`. */
export function stellarMethods(mppx) {
  const { Credential, Method, Store, z } = mppx;

  const chargeMethod = Method.from({
    name: "stellar",
    intent: "charge",
    schema: {
      credential: {
        payload: z.discriminatedUnion("type", [
          z.object({
            hash: z.string().check(z.regex(/^[0-9a-f]{64}$/i)),
            sourceSignature: z.string().check(z.regex(/^[0-9a-f]{128}$/i)),
            type: z.literal("signedHash"),
          }),
          z.object({
            hash: z.string().check(z.regex(/^[0-9a-f]{64}$/i)),
            type: z.literal("hash"),
          }),
          z.object({
            transaction: z.string().check(z.maxLength(8192)),
            type: z.literal("transaction"),
          }),
        ]),
      },
      request: z.object({
        amount: z.string(),
        currency: z.string(),
        recipient: z.string(),
        description: z.optional(z.string()),
        externalId: z.optional(z.string()),
        methodDetails: z.optional(
          z.object({
            network: z.string(),
            feePayer: z.optional(z.boolean()),
            credentialTypes: z.optional(z.array(z.string())),
          }),
        ),
      }),
    },
  });

  const channelMethod = Method.from({
    name: "stellar",
    intent: "channel",
    schema: {
      credential: {
        payload: z.union(
          ["voucher", "close"].map((action) =>
            z.object({
              action: z.literal(action),
              amount: z.string().check(z.regex(/^\d+$/)),
              signature: z.string().check(z.regex(/^[0-9a-f]{128}$/i)),
            }),
          ),
        ),
      },
      request: z.object({
        amount: z.string(),
        channel: z.string(),
        description: z.optional(z.string()),
        externalId: z.optional(z.string()),
        methodDetails: z.optional(
          z.object({
            reference: z.optional(z.string()),
            network: z.optional(z.string()),
            cumulativeAmount: z.optional(z.string()),
          }),
        ),
      }),
    },
  });

  function transfer(source, passphrase, currency, from, to, amount, expires) {
    const builder = new TransactionBuilder(source, { fee: BASE_FEE, networkPassphrase: passphrase })
      .addOperation(
        new Contract(currency).call(
          "transfer",
          new Address(from).toScVal(),
          new Address(to).toScVal(),
          nativeToScVal(amount, { type: "i128" }),
        ),
      );
    if (expires) builder.setTimebounds(0, expires);
    else builder.setTimeout(DEFAULT_TIMEOUT_SECONDS);
    return builder.build();
  }

  async function poll(server, txHash) {
    for (let attempt = 0; attempt < 60; attempt++) {
      const found = await server.getTransaction(txHash);
      if (found.status === "SUCCESS") return;
      if (found.status === "FAILED") throw new Error(`transaction ${txHash} failed`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    throw new Error(`transaction ${txHash} not confirmed`);
  }

  function charge({ keypair, rpcUrl, mode: defaultMode = "pull" }) {
    return Method.toClient(chargeMethod, {
      context: z.object({ mode: z.optional(z.enum(["push", "pull"])) }),
      async createCredential({ challenge, context }) {
        const { amount, currency, recipient, methodDetails } = challenge.request;
        const network = networkOf(methodDetails?.network);
        const passphrase = PASSPHRASES[network];
        const server = new rpc.Server(rpcUrl);
        const mode = context?.mode ?? defaultMode;
        const sponsored = methodDetails?.feePayer === true;
        const types = methodDetails?.credentialTypes;
        if (sponsored && mode === "push") {
          throw new Error("Push mode is not supported for server-sponsored transactions.");
        }
        if (mode === "push" && !types?.includes("signedHash")) {
          throw new Error("Server does not accept secure push credentials (signedHash).");
        }
        if (mode === "pull" && types && !types.includes("transaction")) {
          throw new Error("Server does not accept pull mode credentials (transaction).");
        }
        const expires = challenge.expires
          ? Math.floor(new Date(challenge.expires).getTime() / 1000)
          : undefined;
        const source = `did:pkh:${network}:${keypair.publicKey()}`;
        const value = BigInt(amount);

        if (sponsored) {
          const unsigned = transfer(
            new Account(ALL_ZEROS, "0"),
            passphrase,
            currency,
            keypair.publicKey(),
            recipient,
            value,
            expires,
          );
          const prepared = await server.prepareTransaction(unsigned);
          const latest = await server.getLatestLedger();
          const validUntil = expires
            ? latest.sequence +
              Math.ceil(Math.max(expires - Math.floor(Date.now() / 1000), 0) / LEDGER_CLOSE_SECONDS)
            : latest.sequence + Math.ceil(DEFAULT_TIMEOUT_SECONDS / LEDGER_CLOSE_SECONDS) + 10;
          const envelope = prepared.toEnvelope();
          for (const op of envelope.v1().tx().operations()) {
            const body = op.body();
            if (body.switch().value !== xdr.OperationType.invokeHostFunction().value) continue;
            const entries = body.invokeHostFunctionOp().auth();
            for (let i = 0; i < entries.length; i++) {
              const kind = entries[i].credentials().switch().value;
              if (kind === xdr.SorobanCredentialsType.sorobanCredentialsAddress().value) {
                entries[i] = await authorizeEntry(entries[i], keypair, validUntil, passphrase);
              }
            }
          }
          const transaction = envelope.toXDR("base64");
          return Credential.serialize({ challenge, payload: { type: "transaction", transaction }, source });
        }

        const account = await server.getAccount(keypair.publicKey());
        const prepared = await server.prepareTransaction(
          transfer(account, passphrase, currency, keypair.publicKey(), recipient, value, expires),
        );
        prepared.sign(keypair);
        if (mode === "push") {
          const sent = await server.sendTransaction(prepared);
          if (sent.status === "ERROR" || sent.status === "DUPLICATE") {
            throw new Error(`Broadcast failed: sendTransaction returned ${sent.status}.`);
          }
          await poll(server, sent.hash);
          const lower = sent.hash.toLowerCase();
          const sourceSignature = Buffer.from(
            keypair.sign(Buffer.from(`${challenge.id}:${lower}`)),
          ).toString("hex");
          return Credential.serialize({
            challenge,
            payload: { type: "signedHash", hash: sent.hash, sourceSignature },
            source,
          });
        }
        return Credential.serialize({
          challenge,
          payload: { type: "transaction", transaction: prepared.toXDR() },
          source,
        });
      },
    });
  }

  function assertCommitmentBinds(bytes, { channel, amount, network }) {
    const decoded = scValToNative(xdr.ScVal.fromXDR(Buffer.from(bytes)));
    if (decoded?.domain !== "chancmmt") throw new Error("Refusing to sign: commitment domain mismatch");
    if (decoded.channel !== channel) throw new Error("Refusing to sign: commitment channel mismatch");
    if (BigInt(decoded.amount) !== amount) throw new Error("Refusing to sign: commitment amount mismatch");
    const expected = hash(Buffer.from(PASSPHRASES[network]));
    if (!(decoded.network instanceof Uint8Array) || Buffer.compare(Buffer.from(decoded.network), expected) !== 0) {
      throw new Error("Refusing to sign: commitment network mismatch");
    }
  }

  function channel({ commitmentKey, rpcUrl, allowedChannels, store = Store.memory() }) {
    if (!allowedChannels?.length) throw new Error("Channel pinning is required.");
    return Method.toClient(channelMethod, {
      context: z.object({
        cumulativeAmount: z.optional(z.string()),
        action: z.optional(z.enum(["voucher", "close"])),
      }),
      async createCredential({ challenge, context }) {
        const { amount, channel: address, methodDetails } = challenge.request;
        const network = networkOf(methodDetails?.network);
        if (!allowedChannels.includes(address)) {
          throw new Error(`Channel address mismatch: server advertised "${address}"`);
        }
        const action = context?.action ?? "voucher";
        const key = `stellar:channel:client:${network}:${address}:cumulative`;
        const stored = await store.get(key);
        const local = stored && typeof stored === "object" && "amount" in stored ? BigInt(stored.amount) : 0n;
        const reported = BigInt(methodDetails?.cumulativeAmount ?? "0");
        const previous = local > reported ? local : reported;
        const cumulative =
          context?.cumulativeAmount !== undefined ? BigInt(context.cumulativeAmount) : previous + BigInt(amount);

        const server = new rpc.Server(rpcUrl);
        const call = new Contract(address).call("prepare_commitment", nativeToScVal(cumulative, { type: "i128" }));
        const simulation = new TransactionBuilder(new Account(ALL_ZEROS, "0"), {
          fee: "100",
          networkPassphrase: PASSPHRASES[network],
        })
          .addOperation(call)
          .setTimeout(10)
          .build();
        const simulated = await server.simulateTransaction(simulation);
        if (rpc.Api.isSimulationError(simulated)) throw new Error(`simulation failed: ${simulated.error}`);
        const returned = simulated.result?.retval;
        if (!returned) throw new Error("prepare_commitment returned no value");
        const bytes = returned.bytes();
        assertCommitmentBinds(bytes, { channel: address, amount: cumulative, network });
        const signature = Buffer.from(commitmentKey.sign(Buffer.from(bytes))).toString("hex");
        await store.put(key, { amount: cumulative.toString() });
        return Credential.serialize({
          challenge,
          payload: { action, amount: cumulative.toString(), signature },
        });
      },
    });
  }

  return { charge, channel };
}
