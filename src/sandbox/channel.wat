;; The sandbox's one-way payment channel contract, in WebAssembly text.
;;
;; Written for tower-paywall from the interface of the public `one-way-channel` contract (ABI,
;; storage keys, errors and signed commitment: research/mpp.md §3.1–§3.2). A funder (`from`)
;; deposits a token; a recipient (`to`) withdraws cumulative amounts the funder's
;; `commitment_key` signed off-chain; the funder gets the rest back when the recipient closes
;; the channel, or by itself `refund_waiting_period` ledgers after a `close_start`.
;;
;;   __constructor(token, from, commitment_key: BytesN<32>, to, amount: i128, refund_waiting_period: u32)
;;   top_up(amount: i128)
;;   prepare_commitment(amount: i128) -> Bytes
;;   settle(amount: i128, signature: BytesN<64>)
;;   close(amount: i128, signature: BytesN<64>)
;;   close_start()
;;   refund()
;;   token() -> Address, from() -> Address, to() -> Address, refund_waiting_period() -> u32,
;;   balance() -> i128, deposited() -> i128, withdrawn() -> i128
;;
;; Errors (Error(Contract, code)): 1 NegativeAmount, 2 NotClosed, 3 RefundWaitingPeriodNotElapsed,
;; 4 AlreadyClosed. Instance storage keys are `Vec[Symbol(variant)]`: Token, From, CommitmentKey,
;; To, RefundWaitingPeriod, WithdrawnAmount, CloseEffectiveAtLedger. Events: topics
;; `[Symbol(name)]`, data a map of the fields: open{amount, commitment_key, from,
;; refund_waiting_period, to, token}, close{effective_at_ledger}, withdraw{amount, to},
;; refund{amount, from}.
;;
;; Every host function takes and returns 64-bit values. Most are `Val`s: the low 8 bits are a
;; tag, the high 56 bits a body holding a small value (u32, a short symbol, an i128 that fits
;; 56 bits …) or the handle of a host object (bytes, vectors, maps, addresses, big numbers).
(module
  ;; ─── Host functions (module and function names from soroban-env-common's env.json) ───

  ;; context
  (import "x" "1" (func $contract_event (param i64 i64) (result i64)))
  (import "x" "3" (func $get_ledger_sequence (result i64)))
  (import "x" "5" (func $fail_with_error (param i64) (result i64)))
  (import "x" "6" (func $get_ledger_network_id (result i64)))
  (import "x" "7" (func $get_current_contract_address (result i64)))
  ;; int: i128 objects, built from and read as (hi: i64, lo: u64)
  (import "i" "6" (func $obj_from_i128_pieces (param i64 i64) (result i64)))
  (import "i" "7" (func $obj_to_i128_lo64 (param i64) (result i64)))
  (import "i" "8" (func $obj_to_i128_hi64 (param i64) (result i64)))
  ;; map
  (import "m" "_" (func $map_new (result i64)))
  (import "m" "0" (func $map_put (param i64 i64 i64) (result i64)))
  ;; vec
  (import "v" "_" (func $vec_new (result i64)))
  (import "v" "6" (func $vec_push_back (param i64 i64) (result i64)))
  ;; ledger: contract data and TTLs
  (import "l" "_" (func $put_contract_data (param i64 i64 i64) (result i64)))
  (import "l" "0" (func $has_contract_data (param i64 i64) (result i64)))
  (import "l" "1" (func $get_contract_data (param i64 i64) (result i64)))
  (import "l" "8" (func $extend_current_contract_instance_and_code_ttl (param i64 i64) (result i64)))
  ;; call: other contracts
  (import "d" "_" (func $call (param i64 i64 i64) (result i64)))
  (import "d" "0" (func $try_call (param i64 i64 i64) (result i64)))
  ;; buf: bytes and symbols
  (import "b" "_" (func $serialize_to_bytes (param i64) (result i64)))
  (import "b" "8" (func $bytes_len (param i64) (result i64)))
  (import "b" "j" (func $symbol_new_from_linear_memory (param i64 i64) (result i64)))
  ;; crypto: traps when the signature does not verify
  (import "c" "0" (func $verify_sig_ed25519 (param i64 i64 i64) (result i64)))
  ;; address
  (import "a" "0" (func $require_auth (param i64) (result i64)))

  ;; ─── Val encoding ───

  (global $TAG_MASK i64 (i64.const 0xff))
  ;; Error: code << 32 | type << 8 | 3; type 0 is `Contract`.
  (global $TAG_ERROR i64 (i64.const 3))
  ;; U32Val: value << 32 | 4.
  (global $TAG_U32 i64 (i64.const 4))
  ;; An i128 within 56 signed bits: value << 8 | 11.
  (global $TAG_I128_SMALL i64 (i64.const 11))
  ;; Object handles.
  (global $TAG_I128_OBJECT i64 (i64.const 69))
  (global $TAG_BYTES_OBJECT i64 (i64.const 72))
  (global $TAG_ADDRESS_OBJECT i64 (i64.const 77))
  (global $TRUE i64 (i64.const 1))
  (global $VOID i64 (i64.const 2))
  ;; StorageType::Instance (a plain integer, not a Val).
  (global $INSTANCE i64 (i64.const 2))

  ;; Symbols of up to 9 characters are small Vals: 6 bits a character ('_' 1, '0'–'9' 2–11,
  ;; 'A'–'Z' 12–37, 'a'–'z' 38–63) << 8 | 14.
  (global $SYM_TOKEN i64 (i64.const 0x0000001fd30ab30e))     ;; Symbol("Token")
  (global $SYM_FROM i64 (i64.const 0x00000000477d320e))      ;; Symbol("From")
  (global $SYM_TO i64 (i64.const 0x000000000007f40e))        ;; Symbol("To")
  (global $SYM_TRANSFER i64 (i64.const 0x00e779b3e2bab70e))  ;; Symbol("transfer")
  (global $SYM_BALANCE i64 (i64.const 0x000279b19b3a2a0e))   ;; Symbol("balance")
  (global $SYM_OPEN i64 (i64.const 0x00000000d35ab30e))      ;; Symbol("open")
  (global $SYM_CLOSE i64 (i64.const 0x00000028c74e2a0e))     ;; Symbol("close")
  (global $SYM_WITHDRAW i64 (i64.const 0x00f2ee6da779bc0e))  ;; Symbol("withdraw")
  (global $SYM_REFUND i64 (i64.const 0x00000deaaface90e))    ;; Symbol("refund")
  (global $SYM_AMOUNT i64 (i64.const 0x000009b2d3acf90e))    ;; Symbol("amount")
  (global $SYM_CHANNEL i64 (i64.const 0x00028b66cf3ab10e))   ;; Symbol("channel")
  (global $SYM_DOMAIN i64 (i64.const 0x00000a74ca6bb30e))    ;; Symbol("domain")
  (global $SYM_CHANCMMT i64 (i64.const 0x00a2d9b3a32cb90e))  ;; Symbol("chancmmt")
  (global $SYM_NETWORK i64 (i64.const 0x00033ab9f34df00e))   ;; Symbol("network")
  (global $SYM_FROM_FIELD i64 (i64.const 0x00000000af7d320e)) ;; Symbol("from")
  (global $SYM_TO_FIELD i64 (i64.const 0x00000000000e740e))  ;; Symbol("to")
  (global $SYM_TOKEN_FIELD i64 (i64.const 0x00000039d30ab30e)) ;; Symbol("token")

  ;; Longer symbols are host objects, made from their text in linear memory (see $long_symbol).
  (memory (export "memory") 1)
  (data (i32.const 0) "CommitmentKey")
  (data (i32.const 32) "RefundWaitingPeriod")
  (data (i32.const 64) "WithdrawnAmount")
  (data (i32.const 96) "CloseEffectiveAtLedger")
  (data (i32.const 128) "commitment_key")
  (data (i32.const 160) "refund_waiting_period")
  (data (i32.const 192) "effective_at_ledger")

  ;; ─── Errors ───

  (global $NEGATIVE_AMOUNT i32 (i32.const 1))
  (global $NOT_CLOSED i32 (i32.const 2))
  (global $REFUND_WAITING_PERIOD_NOT_ELAPSED i32 (i32.const 3))
  (global $ALREADY_CLOSED i32 (i32.const 4))

  ;; ─── Instance TTL: below 30 days (of 5 s ledgers) left, extend to 120 days ───

  (global $TTL_THRESHOLD i32 (i32.const 518400))
  (global $TTL_EXTEND_TO i32 (i32.const 2073600))

  ;; ─── Helpers: values ───

  ;; Stops with Error(Contract, code).
  (func $fail (param $code i32)
    (drop (call $fail_with_error
      (i64.or (i64.shl (i64.extend_i32_u (local.get $code)) (i64.const 32))
              (global.get $TAG_ERROR))))
    unreachable)

  ;; Traps unless `val` has the tag `tag` (an argument of the wrong type).
  (func $expect (param $val i64) (param $tag i64)
    (if (i64.ne (i64.and (local.get $val) (global.get $TAG_MASK)) (local.get $tag))
      (then unreachable)))

  ;; Traps unless `val` is an address.
  (func $expect_address (param $val i64)
    (call $expect (local.get $val) (global.get $TAG_ADDRESS_OBJECT)))

  ;; Traps unless `val` is a `BytesN<len>`.
  (func $expect_bytes (param $val i64) (param $len i32)
    (call $expect (local.get $val) (global.get $TAG_BYTES_OBJECT))
    (if (i64.ne (call $bytes_len (local.get $val)) (call $u32 (local.get $len)))
      (then unreachable)))

  ;; A u32 as a Val.
  (func $u32 (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $n)) (i64.const 32)) (global.get $TAG_U32)))

  ;; The u32 in a Val; traps on another type.
  (func $u32_of (param $val i64) (result i32)
    (call $expect (local.get $val) (global.get $TAG_U32))
    (i32.wrap_i64 (i64.shr_u (local.get $val) (i64.const 32))))

  ;; A symbol longer than 9 characters, from `len` bytes of text at `pos`.
  (func $long_symbol (param $pos i32) (param $len i32) (result i64)
    (call $symbol_new_from_linear_memory (call $u32 (local.get $pos)) (call $u32 (local.get $len))))
  (func $sym_commitment_key_variant (result i64) (call $long_symbol (i32.const 0) (i32.const 13)))
  (func $sym_refund_waiting_period_variant (result i64) (call $long_symbol (i32.const 32) (i32.const 19)))
  (func $sym_withdrawn_amount_variant (result i64) (call $long_symbol (i32.const 64) (i32.const 15)))
  (func $sym_close_effective_at_ledger_variant (result i64) (call $long_symbol (i32.const 96) (i32.const 22)))
  (func $sym_commitment_key_field (result i64) (call $long_symbol (i32.const 128) (i32.const 14)))
  (func $sym_refund_waiting_period_field (result i64) (call $long_symbol (i32.const 160) (i32.const 21)))
  (func $sym_effective_at_ledger_field (result i64) (call $long_symbol (i32.const 192) (i32.const 19)))

  ;; Vec[a].
  (func $vec1 (param $a i64) (result i64)
    (call $vec_push_back (call $vec_new) (local.get $a)))

  ;; Vec[a, b, c].
  (func $vec3 (param $a i64) (param $b i64) (param $c i64) (result i64)
    (call $vec_push_back
      (call $vec_push_back (call $vec1 (local.get $a)) (local.get $b))
      (local.get $c)))

  ;; Map{k1: v1, k2: v2} (the host keeps keys sorted).
  (func $map2 (param $k1 i64) (param $v1 i64) (param $k2 i64) (param $v2 i64) (result i64)
    (call $map_put
      (call $map_put (call $map_new) (local.get $k1) (local.get $v1))
      (local.get $k2) (local.get $v2)))

  ;; ─── Helpers: i128 arithmetic on (hi, lo) halves ───
  ;;
  ;; Contract Wasm has no multi-value results, so the i128 read or computed last is in $hi:$lo.

  (global $hi (mut i64) (i64.const 0))
  (global $lo (mut i64) (i64.const 0))

  ;; Reads an i128 Val (small or object) into $hi:$lo; traps on another type.
  (func $i128_read (param $val i64)
    (if (i64.eq (i64.and (local.get $val) (global.get $TAG_MASK)) (global.get $TAG_I128_SMALL))
      (then
        (global.set $lo (i64.shr_s (local.get $val) (i64.const 8)))
        (global.set $hi (i64.shr_s (global.get $lo) (i64.const 63))))
      (else
        (call $expect (local.get $val) (global.get $TAG_I128_OBJECT))
        (global.set $lo (call $obj_to_i128_lo64 (local.get $val)))
        (global.set $hi (call $obj_to_i128_hi64 (local.get $val))))))

  ;; $hi:$lo as a Val: small when it fits 56 signed bits, else a host object.
  (func $i128_val (result i64)
    (if (result i64)
      (i32.and
        (i64.eq (global.get $hi) (i64.shr_s (global.get $lo) (i64.const 63)))
        (i64.eq (global.get $lo)
                (i64.shr_s (i64.shl (global.get $lo) (i64.const 8)) (i64.const 8))))
      (then (i64.or (i64.shl (global.get $lo) (i64.const 8)) (global.get $TAG_I128_SMALL)))
      (else (call $obj_from_i128_pieces (global.get $hi) (global.get $lo)))))

  ;; $hi:$lo = a + b; traps on overflow.
  (func $i128_add (param $a_hi i64) (param $a_lo i64) (param $b_hi i64) (param $b_lo i64)
    (local $sum_hi i64)
    (global.set $lo (i64.add (local.get $a_lo) (local.get $b_lo)))
    (local.set $sum_hi
      (i64.add (i64.add (local.get $a_hi) (local.get $b_hi))
               (i64.extend_i32_u (i64.lt_u (global.get $lo) (local.get $a_lo)))))
    ;; Overflow: both operands have one sign and the sum the other.
    (if (i64.lt_s (i64.and (i64.xor (local.get $a_hi) (local.get $sum_hi))
                           (i64.xor (local.get $b_hi) (local.get $sum_hi)))
                  (i64.const 0))
      (then unreachable))
    (global.set $hi (local.get $sum_hi)))

  ;; $hi:$lo = a - b; traps on overflow.
  (func $i128_sub (param $a_hi i64) (param $a_lo i64) (param $b_hi i64) (param $b_lo i64)
    (local $difference_hi i64)
    (global.set $lo (i64.sub (local.get $a_lo) (local.get $b_lo)))
    (local.set $difference_hi
      (i64.sub (i64.sub (local.get $a_hi) (local.get $b_hi))
               (i64.extend_i32_u (i64.lt_u (local.get $a_lo) (local.get $b_lo)))))
    ;; Overflow: the operands have different signs and the difference has b's.
    (if (i64.lt_s (i64.and (i64.xor (local.get $a_hi) (local.get $b_hi))
                           (i64.xor (local.get $a_hi) (local.get $difference_hi)))
                  (i64.const 0))
      (then unreachable))
    (global.set $hi (local.get $difference_hi)))

  ;; Whether a < b.
  (func $i128_lt (param $a_hi i64) (param $a_lo i64) (param $b_hi i64) (param $b_lo i64) (result i32)
    (if (result i32) (i64.eq (local.get $a_hi) (local.get $b_hi))
      (then (i64.lt_u (local.get $a_lo) (local.get $b_lo)))
      (else (i64.lt_s (local.get $a_hi) (local.get $b_hi)))))

  ;; Whether $hi:$lo > 0.
  (func $i128_is_positive (result i32)
    (i32.or (i64.gt_s (global.get $hi) (i64.const 0))
            (i32.and (i64.eqz (global.get $hi)) (i64.ne (global.get $lo) (i64.const 0)))))

  ;; Reads an amount argument into $hi:$lo; NegativeAmount when it is below zero.
  (func $read_amount (param $val i64)
    (call $i128_read (local.get $val))
    (if (i64.lt_s (global.get $hi) (i64.const 0))
      (then (call $fail (global.get $NEGATIVE_AMOUNT)))))

  ;; ─── Helpers: instance storage ───

  ;; The key of a DataKey variant: Vec[Symbol(variant)].
  (func $key (param $variant i64) (result i64)
    (call $vec1 (local.get $variant)))

  (func $load (param $variant i64) (result i64)
    (call $get_contract_data (call $key (local.get $variant)) (global.get $INSTANCE)))

  (func $store (param $variant i64) (param $val i64)
    (drop (call $put_contract_data (call $key (local.get $variant)) (local.get $val)
                                   (global.get $INSTANCE))))

  (func $has (param $variant i64) (result i32)
    (i64.eq (call $has_contract_data (call $key (local.get $variant)) (global.get $INSTANCE))
            (global.get $TRUE)))

  ;; Keeps the instance (and the code) alive: extends them when fewer than 30 days are left.
  (func $extend_ttl
    (drop (call $extend_current_contract_instance_and_code_ttl
      (call $u32 (global.get $TTL_THRESHOLD)) (call $u32 (global.get $TTL_EXTEND_TO)))))

  ;; Whether the channel is closed as of ledger `now`: its close is effective at or before it.
  (func $is_closed (param $now i32) (result i32)
    (if (result i32) (call $has (call $sym_close_effective_at_ledger_variant))
      (then (i32.le_u (call $u32_of (call $load (call $sym_close_effective_at_ledger_variant)))
                      (local.get $now)))
      (else (i32.const 0))))

  ;; The current ledger's sequence number.
  (func $now (result i32)
    (call $u32_of (call $get_ledger_sequence)))

  ;; ─── Helpers: the token ───

  ;; token.transfer(from, to, amount); traps if the token refuses.
  (func $transfer (param $from i64) (param $to i64) (param $amount i64)
    (drop (call $call (call $load (global.get $SYM_TOKEN)) (global.get $SYM_TRANSFER)
                      (call $vec3 (local.get $from) (local.get $to) (local.get $amount)))))

  ;; token.transfer(from, to, amount); whether the token accepted it (a failure is not a trap).
  (func $try_transfer (param $from i64) (param $to i64) (param $amount i64) (result i32)
    (i64.ne
      (i64.and
        (call $try_call (call $load (global.get $SYM_TOKEN)) (global.get $SYM_TRANSFER)
                        (call $vec3 (local.get $from) (local.get $to) (local.get $amount)))
        (global.get $TAG_MASK))
      (global.get $TAG_ERROR)))

  ;; token.balance(this contract).
  (func $token_balance (result i64)
    (call $call (call $load (global.get $SYM_TOKEN)) (global.get $SYM_BALANCE)
                (call $vec1 (call $get_current_contract_address))))

  ;; ─── Helpers: events ───

  ;; Publishes an event with topics [Symbol(name)] and `data`.
  (func $publish (param $name i64) (param $data i64)
    (drop (call $contract_event (call $vec1 (local.get $name)) (local.get $data))))

  ;; ─── Helpers: commitments and withdrawals ───

  ;; The bytes the commitment key signs for `amount`: the XDR of
  ;; ScVal::Map{amount: I128, channel: Address(this), domain: Symbol("chancmmt"), network: Bytes(id)}.
  (func $commitment (param $amount i64) (result i64)
    (local $map i64)
    (local.set $map (call $map2 (global.get $SYM_AMOUNT) (local.get $amount)
                                (global.get $SYM_CHANNEL) (call $get_current_contract_address)))
    (local.set $map (call $map_put (local.get $map) (global.get $SYM_DOMAIN) (global.get $SYM_CHANCMMT)))
    (local.set $map (call $map_put (local.get $map) (global.get $SYM_NETWORK) (call $get_ledger_network_id)))
    (call $serialize_to_bytes (local.get $map)))

  ;; settle and close: `to` authorizes; the commitment key's signature over the commitment for
  ;; the cumulative `amount` must verify; `to` is paid what `amount` adds to what it withdrew.
  ;; A lower amount than already withdrawn is NegativeAmount; an equal one pays nothing.
  (func $withdraw (param $amount i64) (param $signature i64)
    (local $to i64) (local $amount_hi i64) (local $amount_lo i64) (local $payout i64)
    (local.set $to (call $load (global.get $SYM_TO)))
    (drop (call $require_auth (local.get $to)))
    (call $i128_read (local.get $amount))
    (local.set $amount_hi (global.get $hi))
    (local.set $amount_lo (global.get $lo))
    (call $expect_bytes (local.get $signature) (i32.const 64))
    (drop (call $verify_sig_ed25519
      (call $load (call $sym_commitment_key_variant))
      (call $commitment (local.get $amount))
      (local.get $signature)))
    (call $i128_read (call $load (call $sym_withdrawn_amount_variant)))
    (if (call $i128_lt (local.get $amount_hi) (local.get $amount_lo) (global.get $hi) (global.get $lo))
      (then (call $fail (global.get $NEGATIVE_AMOUNT))))
    (call $i128_sub (local.get $amount_hi) (local.get $amount_lo) (global.get $hi) (global.get $lo))
    (if (call $i128_is_positive)
      (then
        (local.set $payout (call $i128_val))
        (call $transfer (call $get_current_contract_address) (local.get $to) (local.get $payout))
        (call $store (call $sym_withdrawn_amount_variant) (local.get $amount))
        (call $publish (global.get $SYM_WITHDRAW)
          (call $map2 (global.get $SYM_TO_FIELD) (local.get $to)
                      (global.get $SYM_AMOUNT) (local.get $payout))))))

  ;; Sends the whole balance back to `from` (`try`: a refusal leaves it in the channel);
  ;; publishes refund{from, amount} when something moved.
  (func $sweep (param $try i32)
    (local $from i64) (local $balance i64)
    (local.set $from (call $load (global.get $SYM_FROM)))
    (local.set $balance (call $token_balance))
    (call $i128_read (local.get $balance))
    (if (call $i128_is_positive)
      (then
        (if (local.get $try)
          (then
            (if (i32.eqz (call $try_transfer (call $get_current_contract_address)
                                             (local.get $from) (local.get $balance)))
              (then (return))))
          (else
            (call $transfer (call $get_current_contract_address) (local.get $from) (local.get $balance))))
        (call $publish (global.get $SYM_REFUND)
          (call $map2 (global.get $SYM_FROM_FIELD) (local.get $from)
                      (global.get $SYM_AMOUNT) (local.get $balance))))))

  ;; Publishes close{effective_at_ledger}.
  (func $publish_close (param $effective i64)
    (call $publish (global.get $SYM_CLOSE)
      (call $map_put (call $map_new) (call $sym_effective_at_ledger_field) (local.get $effective))))

  ;; ─── __constructor(token, from, commitment_key, to, amount, refund_waiting_period) ───

  (func (export "__constructor")
    (param $token i64) (param $from i64) (param $commitment_key i64) (param $to i64)
    (param $amount i64) (param $refund_waiting_period i64) (result i64)
    (local $deposit i32) (local $data i64)
    (call $expect_address (local.get $token))
    (call $expect_address (local.get $from))
    (call $expect_bytes (local.get $commitment_key) (i32.const 32))
    (call $expect_address (local.get $to))
    (call $read_amount (local.get $amount))
    (local.set $deposit (call $i128_is_positive))
    (drop (call $u32_of (local.get $refund_waiting_period)))
    (call $store (global.get $SYM_TOKEN) (local.get $token))
    (call $store (global.get $SYM_FROM) (local.get $from))
    (call $store (call $sym_commitment_key_variant) (local.get $commitment_key))
    (call $store (global.get $SYM_TO) (local.get $to))
    (call $store (call $sym_refund_waiting_period_variant) (local.get $refund_waiting_period))
    ;; I128(0): a small i128 is value << 8 | 11.
    (call $store (call $sym_withdrawn_amount_variant) (global.get $TAG_I128_SMALL))
    (if (local.get $deposit)
      (then
        (drop (call $require_auth (local.get $from)))
        (call $transfer (local.get $from) (call $get_current_contract_address) (local.get $amount))))
    (call $extend_ttl)
    (local.set $data (call $map2 (global.get $SYM_FROM_FIELD) (local.get $from)
                                 (call $sym_commitment_key_field) (local.get $commitment_key)))
    (local.set $data (call $map_put (local.get $data) (global.get $SYM_TO_FIELD) (local.get $to)))
    (local.set $data (call $map_put (local.get $data) (global.get $SYM_TOKEN_FIELD) (local.get $token)))
    (local.set $data (call $map_put (local.get $data) (global.get $SYM_AMOUNT) (local.get $amount)))
    (local.set $data (call $map_put (local.get $data) (call $sym_refund_waiting_period_field)
                                    (local.get $refund_waiting_period)))
    (call $publish (global.get $SYM_OPEN) (local.get $data))
    (global.get $VOID))

  ;; ─── top_up(amount): the funder deposits more ───

  (func (export "top_up") (param $amount i64) (result i64)
    (local $from i64)
    (call $read_amount (local.get $amount))
    (local.set $from (call $load (global.get $SYM_FROM)))
    (drop (call $require_auth (local.get $from)))
    (call $transfer (local.get $from) (call $get_current_contract_address) (local.get $amount))
    (call $extend_ttl)
    (global.get $VOID))

  ;; ─── prepare_commitment(amount) -> Bytes: what the commitment key signs ───

  (func (export "prepare_commitment") (param $amount i64) (result i64)
    (call $i128_read (local.get $amount))
    (call $commitment (local.get $amount)))

  ;; ─── settle(amount, signature): the recipient withdraws ───

  (func (export "settle") (param $amount i64) (param $signature i64) (result i64)
    (call $withdraw (local.get $amount) (local.get $signature))
    (call $extend_ttl)
    (global.get $VOID))

  ;; ─── close(amount, signature): the recipient withdraws, closes now, refunds the rest ───

  (func (export "close") (param $amount i64) (param $signature i64) (result i64)
    (local $now i32)
    (call $withdraw (local.get $amount) (local.get $signature))
    (local.set $now (call $now))
    (if (i32.eqz (call $is_closed (local.get $now)))
      (then
        (call $store (call $sym_close_effective_at_ledger_variant) (call $u32 (local.get $now)))
        (call $publish_close (call $u32 (local.get $now)))))
    (call $sweep (i32.const 1))
    (call $extend_ttl)
    (global.get $VOID))

  ;; ─── close_start(): the funder starts the refund waiting period ───

  (func (export "close_start") (result i64)
    (local $now i32) (local $effective i64)
    (drop (call $require_auth (call $load (global.get $SYM_FROM))))
    (local.set $now (call $now))
    (if (call $is_closed (local.get $now))
      (then (call $fail (global.get $ALREADY_CLOSED))))
    (local.set $effective
      (i64.add (i64.extend_i32_u (local.get $now))
               (i64.extend_i32_u (call $u32_of (call $load (call $sym_refund_waiting_period_variant))))))
    (if (i64.gt_u (local.get $effective) (i64.const 0xffffffff))
      (then unreachable))
    (call $store (call $sym_close_effective_at_ledger_variant)
                 (call $u32 (i32.wrap_i64 (local.get $effective))))
    (call $publish_close (call $u32 (i32.wrap_i64 (local.get $effective))))
    (call $extend_ttl)
    (global.get $VOID))

  ;; ─── refund(): once closed, the funder takes the whole balance back ───

  (func (export "refund") (result i64)
    (drop (call $require_auth (call $load (global.get $SYM_FROM))))
    (if (i32.eqz (call $has (call $sym_close_effective_at_ledger_variant)))
      (then (call $fail (global.get $NOT_CLOSED))))
    (if (i32.eqz (call $is_closed (call $now)))
      (then (call $fail (global.get $REFUND_WAITING_PERIOD_NOT_ELAPSED))))
    (call $sweep (i32.const 0))
    (call $extend_ttl)
    (global.get $VOID))

  ;; ─── Getters ───

  (func (export "token") (result i64)
    (call $load (global.get $SYM_TOKEN)))

  (func (export "from") (result i64)
    (call $load (global.get $SYM_FROM)))

  (func (export "to") (result i64)
    (call $load (global.get $SYM_TO)))

  (func (export "refund_waiting_period") (result i64)
    (call $load (call $sym_refund_waiting_period_variant)))

  (func (export "withdrawn") (result i64)
    (call $load (call $sym_withdrawn_amount_variant)))

  (func (export "balance") (result i64)
    (call $token_balance))

  ;; deposited = balance + withdrawn.
  (func (export "deposited") (result i64)
    (local $balance_hi i64) (local $balance_lo i64)
    (call $i128_read (call $token_balance))
    (local.set $balance_hi (global.get $hi))
    (local.set $balance_lo (global.get $lo))
    (call $i128_read (call $load (call $sym_withdrawn_amount_variant)))
    (call $i128_add (local.get $balance_hi) (local.get $balance_lo) (global.get $hi) (global.get $lo))
    (call $i128_val))

  ;; ─── Environment metadata: interface version (protocol 30, pre-release 0) ───
  ;; XDR ScEnvMetaEntry::ScEnvMetaKindInterfaceVersion{protocol, pre_release}; the host refuses a
  ;; contract without it, or built for a newer protocol than the ledger's.
  (@custom "contractenvmetav0" "\00\00\00\00" "\00\00\00\1e" "\00\00\00\00")
)
