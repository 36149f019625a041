// One unary gRPC call with @grpc/grpc-js (not our code), without a .proto: the request is
// `demo.BuyRequest { item: "a book" }` encoded by hand, and the reply's bytes are returned as
// they came. Prints one JSON line: the status code, details and metadata of an error, or the
// reply (hex) and the response metadata.
//
// GRPC_ADDRESS=127.0.0.1:PORT METHOD=/demo.Shop/Buy [PAYMENT=<PAYMENT-SIGNATURE value>]
import grpc from "@grpc/grpc-js";

const address = process.env.GRPC_ADDRESS;
const method = process.env.METHOD ?? "/demo.Shop/Buy";
const item = Buffer.from("a book");
const request = Buffer.concat([Buffer.from([0x0a, item.length]), item]);

const client = new grpc.Client(address, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
if (process.env.PAYMENT) metadata.set("payment-signature", process.env.PAYMENT);

const plain = (md) =>
  Object.fromEntries(
    Object.entries(md.getMap()).map(([key, value]) => [
      key,
      Buffer.isBuffer(value) ? value.toString("base64") : value,
    ]),
  );

let responseMetadata = {};
const call = client.makeUnaryRequest(
  method,
  (message) => message,
  (bytes) => bytes,
  request,
  metadata,
  (error, reply) => {
    if (error) {
      console.log(
        JSON.stringify({
          ok: false,
          code: error.code,
          details: error.details,
          metadata: plain(error.metadata),
        }),
      );
    } else {
      console.log(
        JSON.stringify({ ok: true, reply: reply.toString("hex"), metadata: responseMetadata }),
      );
    }
    client.close();
  },
);
call.on("metadata", (md) => {
  responseMetadata = plain(md);
});
