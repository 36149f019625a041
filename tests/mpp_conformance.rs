//! The cross-SDK MPP conformance vectors (tempoxyz/mpp-tools `conformance/vectors/`, copied in
//! `tests/data/mpp-conformance/`, see SOURCE.md there) run through `tower_paywall::mpp`.
//!
//! Every scenario of `www-authenticate.json`, `authorization.json`, `base64url.json` and
//! `challenge-id.json` runs, each of its tests (`parse`, `format`, `roundtrip`, `generate`),
//! as the harness (HARNESS_SPEC.md) defines them: parse results are compared with the
//! scenario's object after decoding the embedded `request`; formats are compared with the
//! vector's wire text exactly where our output is canonical (challenges, base64url), and
//! semantically (decoded JSON, key order free) for credentials, as the harness's `semantic`
//! comparison mode does. Expected errors must be errors. Scenarios restricted to other adapters
//! (`adapters`, `sdkVersions`) run too.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tower_paywall::mpp::{
    Challenge, ChallengeKeys, ChallengeSecret, Credential, CredentialHeader, base64url, jcs,
};

const WWW_AUTHENTICATE: &str = include_str!("data/mpp-conformance/www-authenticate.json");
const AUTHORIZATION: &str = include_str!("data/mpp-conformance/authorization.json");
const BASE64URL: &str = include_str!("data/mpp-conformance/base64url.json");
const CHALLENGE_ID: &str = include_str!("data/mpp-conformance/challenge-id.json");

/// Scenarios deliberately not run, as (file, scenario, reason). None: every scenario passes.
const SKIPPED: &[(&str, &str, &str)] = &[];

/// What a scenario's test expects.
enum Expect {
    Success,
    Error(String),
}

struct Scenario {
    name: String,
    json: Value,
}

impl Scenario {
    fn str(&self, key: &str) -> &str {
        self.json[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a string", self.name))
    }

    /// The scenario's `tests`, each as an expectation; `default` when the scenario has none.
    fn tests(&self, known: &[&str], default: &[&str]) -> Vec<(String, Expect)> {
        let Some(tests) = self.json.get("tests") else {
            return default
                .iter()
                .map(|test| ((*test).to_owned(), Expect::Success))
                .collect();
        };
        let tests = tests.as_object().expect("`tests` is an object");
        tests
            .iter()
            .map(|(test, expect)| {
                assert!(
                    known.contains(&test.as_str()),
                    "{}: unknown test kind `{test}`",
                    self.name
                );
                let expect = match expect {
                    Value::Bool(true) => Expect::Success,
                    Value::Object(spec) if spec.get("success") == Some(&Value::Bool(false)) => {
                        Expect::Error(spec["error_type"].as_str().unwrap_or("").to_owned())
                    }
                    other => panic!("{}: unknown expectation {other}", self.name),
                };
                (test.clone(), expect)
            })
            .collect()
    }

    /// `wire`: a string, or `{prefix, repeat, count}`.
    fn wire(&self) -> String {
        match &self.json["wire"] {
            Value::String(wire) => wire.clone(),
            Value::Object(spec) => {
                let count = spec["count"].as_u64().expect("count") as usize;
                format!(
                    "{}{}",
                    spec["prefix"].as_str().expect("prefix"),
                    spec["repeat"].as_str().expect("repeat").repeat(count)
                )
            }
            other => panic!("{}: no wire ({other})", self.name),
        }
    }
}

/// Loads a vector file's scenarios, leaving out the skipped ones; returns them and how many
/// there were.
fn load(file: &str, text: &str) -> (Vec<Scenario>, usize) {
    let document: Value = serde_json::from_str(text).expect("vector file is JSON");
    let all = document["scenarios"].as_array().expect("scenarios");
    let scenarios: Vec<Scenario> = all
        .iter()
        .map(|json| Scenario {
            name: json["name"].as_str().expect("name").to_owned(),
            json: json.clone(),
        })
        .filter(|scenario| {
            !SKIPPED
                .iter()
                .any(|(f, name, _)| *f == file && *name == scenario.name)
        })
        .collect();
    (scenarios, all.len())
}

/// Tallies of what ran.
#[derive(Default)]
struct Tally {
    scenarios: usize,
    checks: usize,
}

impl Tally {
    fn report(&self, file: &str, total: usize) {
        eprintln!(
            "{file}: {} of {total} scenarios, {} checks passed",
            self.scenarios, self.checks
        );
        let skipped = SKIPPED.iter().filter(|(f, _, _)| *f == file).count();
        assert_eq!(
            self.scenarios + skipped,
            total,
            "{file}: a scenario did not run"
        );
    }
}

/// Runs `check` on every test of every scenario of a vector file, then checks that every
/// scenario ran. `known` and `default` are as in [`Scenario::tests`].
fn run(
    file: &str,
    text: &str,
    known: &[&str],
    default: &[&str],
    check: impl Fn(&Scenario, &str, Expect),
) {
    let (scenarios, total) = load(file, text);
    let mut tally = Tally::default();
    for scenario in &scenarios {
        for (test, expect) in scenario.tests(known, default) {
            check(scenario, &test, expect);
            tally.checks += 1;
        }
        tally.scenarios += 1;
    }
    tally.report(file, total);
}

fn optional_string(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn header_of(object: &Value) -> Option<CredentialHeader> {
    optional_string(object, "header")
        .map(|name| CredentialHeader::parse(&name).expect("a supported credential header"))
}

/// The harness's canonical challenge object: `request` decoded, absent optionals omitted.
fn challenge_to_json(challenge: &Challenge) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), challenge.id.clone().into());
    object.insert("realm".into(), challenge.realm.clone().into());
    object.insert("method".into(), challenge.method.clone().into());
    object.insert("intent".into(), challenge.intent.clone().into());
    object.insert(
        "request".into(),
        Value::Object(challenge.request_json().expect("request decodes")),
    );
    let optionals = [
        ("description", challenge.description.clone()),
        ("digest", challenge.digest.clone()),
        ("expires", challenge.expires.clone()),
        ("header", challenge.header.map(|h| h.as_str().to_owned())),
        ("opaque", challenge.opaque.clone()),
    ];
    for (key, value) in optionals {
        if let Some(value) = value {
            object.insert(key.into(), value.into());
        }
    }
    Value::Object(object)
}

/// A challenge from the harness's canonical object (`request` encoded as base64url of its JCS).
fn challenge_from_json(object: &Value) -> Challenge {
    let text = |key: &str| object[key].as_str().expect("required string").to_owned();
    let mut challenge = Challenge::new(
        text("id"),
        text("realm"),
        text("method"),
        text("intent"),
        jcs::to_base64url(&object["request"]),
    );
    challenge.description = optional_string(object, "description");
    challenge.digest = optional_string(object, "digest");
    challenge.expires = optional_string(object, "expires");
    challenge.header = header_of(object);
    challenge.opaque = optional_string(object, "opaque");
    challenge
}

/// The harness's canonical credential object: the echo's `request` decoded, `source` omitted
/// when absent.
fn credential_to_json(credential: &Credential) -> Value {
    let mut object = Map::new();
    object.insert("challenge".into(), challenge_to_json(&credential.challenge));
    object.insert("payload".into(), credential.payload.clone());
    if let Some(source) = &credential.source {
        object.insert("source".into(), source.clone().into());
    }
    Value::Object(object)
}

/// The expected credential object, with a `null` source (allowed by the harness) dropped.
fn normalized_credential(object: &Value) -> Value {
    let mut object = object.clone();
    if object.get("source") == Some(&Value::Null) {
        object.as_object_mut().expect("object").remove("source");
    }
    object
}

fn credential_from_json(object: &Value) -> Credential {
    let echo = challenge_from_json(&object["challenge"]);
    let mut credential = Credential::new(echo, object["payload"].clone());
    credential.source = optional_string(object, "source");
    credential
}

/// The JSON inside an `Authorization: Payment <token>` value.
fn credential_wire_json(wire: &str) -> Value {
    let token = wire.strip_prefix("Payment ").expect("Payment prefix");
    serde_json::from_slice(&base64url::decode(token).expect("base64url")).expect("JSON")
}

#[test]
fn www_authenticate_vectors() {
    run(
        "www-authenticate.json",
        WWW_AUTHENTICATE,
        &["parse", "format", "roundtrip"],
        &[],
        |scenario, test, expect| {
            let name = &scenario.name;
            match (test, expect) {
                ("parse", Expect::Success) => {
                    let wire = scenario.wire();
                    let started = Instant::now();
                    let parsed = Challenge::parse_all(&wire)
                        .unwrap_or_else(|e| panic!("{name}: parse failed: {e}"));
                    assert!(
                        started.elapsed() < Duration::from_secs(1),
                        "{name}: parsing took {:?}",
                        started.elapsed()
                    );
                    assert_eq!(parsed.len(), 1, "{name}: one challenge");
                    assert_eq!(
                        challenge_to_json(&parsed[0]),
                        scenario.json["object"],
                        "{name}: parsed challenge"
                    );
                }
                ("parse", Expect::Error(kind)) => {
                    assert_eq!(kind, "parse_error", "{name}");
                    let result = Challenge::parse_all(&scenario.wire());
                    assert!(result.is_err(), "{name}: parsed {result:?}");
                }
                ("format", Expect::Success) => {
                    let challenge = challenge_from_json(&scenario.json["object"]);
                    let formatted = challenge
                        .format()
                        .unwrap_or_else(|e| panic!("{name}: format failed: {e}"));
                    assert_eq!(formatted, scenario.wire(), "{name}: formatted header");
                    let reparsed = Challenge::parse_all(&formatted).expect("reparse");
                    assert_eq!(
                        challenge_to_json(&reparsed[0]),
                        scenario.json["object"],
                        "{name}"
                    );
                }
                ("format", Expect::Error(kind)) => {
                    assert_eq!(kind, "format_error", "{name}");
                    let challenge = challenge_from_json(&scenario.json["object"]);
                    let result = challenge.format();
                    assert!(result.is_err(), "{name}: formatted {result:?}");
                }
                ("roundtrip", Expect::Success) => {
                    let wire = scenario.wire();
                    let parsed = Challenge::parse_all(&wire).expect("parse");
                    assert_eq!(
                        parsed[0].format().expect("format"),
                        wire,
                        "{name}: wire → wire"
                    );
                    let challenge = challenge_from_json(&scenario.json["object"]);
                    let again =
                        Challenge::parse_all(&challenge.format().expect("format")).expect("parse");
                    assert_eq!(again, [challenge], "{name}: object → object");
                }
                (test, _) => panic!("{name}: unexpected test `{test}` with an error expectation"),
            }
        },
    );
}

#[test]
fn authorization_vectors() {
    run(
        "authorization.json",
        AUTHORIZATION,
        &["parse", "format", "roundtrip"],
        &[],
        |scenario, test, expect| {
            let name = &scenario.name;
            match (test, expect) {
                ("parse", Expect::Success) => {
                    let parsed = Credential::parse(&scenario.wire())
                        .unwrap_or_else(|e| panic!("{name}: parse failed: {e}"));
                    assert_eq!(
                        credential_to_json(&parsed),
                        normalized_credential(&scenario.json["object"]),
                        "{name}: parsed credential"
                    );
                }
                ("parse", Expect::Error(kind)) => {
                    assert_eq!(kind, "parse_error", "{name}");
                    let result = Credential::parse(&scenario.wire());
                    assert!(result.is_err(), "{name}: parsed {result:?}");
                }
                ("format", Expect::Success) => {
                    let encoded = credential_from_json(&scenario.json["object"]).encode();
                    if encoded != scenario.wire() {
                        // serde_json's `Value` sorts the payload's keys; the vector keeps the
                        // sender's order. Same JSON, other bytes.
                        eprintln!(
                            "authorization.json: {name}: format equal as JSON, not byte for byte"
                        );
                    }
                    assert_eq!(
                        credential_wire_json(&encoded),
                        credential_wire_json(&scenario.wire()),
                        "{name}: formatted credential (semantic)"
                    );
                }
                ("roundtrip", Expect::Success) => {
                    let parsed = Credential::parse(&scenario.wire()).expect("parse");
                    let encoded = parsed.encode();
                    assert_eq!(
                        credential_wire_json(&encoded),
                        credential_wire_json(&scenario.wire()),
                        "{name}: wire → wire (semantic)"
                    );
                    assert_eq!(
                        Credential::parse(&encoded).expect("reparse"),
                        parsed,
                        "{name}"
                    );
                    let credential = credential_from_json(&scenario.json["object"]);
                    assert_eq!(
                        Credential::parse(&credential.encode()).expect("reparse"),
                        credential,
                        "{name}: object → object"
                    );
                }
                (test, _) => panic!("{name}: unexpected test `{test}` with an error expectation"),
            }
        },
    );
}

#[test]
fn base64url_vectors() {
    run(
        "base64url.json",
        BASE64URL,
        &["parse", "format", "roundtrip"],
        &[],
        |scenario, test, expect| {
            let name = &scenario.name;
            match (test, expect) {
                ("parse", Expect::Success) => {
                    let decoded = base64url::decode_to_string(scenario.str("encoded"))
                        .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
                    assert_eq!(decoded, scenario.str("decoded"), "{name}");
                }
                ("parse", Expect::Error(kind)) => {
                    assert_eq!(kind, "encoding_error", "{name}");
                    let result = base64url::decode_to_string(scenario.str("encoded"));
                    assert!(result.is_err(), "{name}: decoded {result:?}");
                }
                ("format", Expect::Success) => {
                    assert_eq!(
                        base64url::encode(scenario.str("decoded")),
                        scenario.str("encoded"),
                        "{name}"
                    );
                }
                ("roundtrip", Expect::Success) => {
                    let decoded = scenario.str("decoded");
                    assert_eq!(
                        base64url::decode_to_string(&base64url::encode(decoded)).expect("decode"),
                        decoded,
                        "{name}"
                    );
                    let encoded = scenario.str("encoded");
                    assert_eq!(
                        base64url::encode(base64url::decode(encoded).expect("decode")),
                        encoded,
                        "{name}"
                    );
                }
                (test, _) => panic!("{name}: unexpected test `{test}` with an error expectation"),
            }
        },
    );
}

#[test]
fn challenge_id_vectors() {
    run(
        "challenge-id.json",
        CHALLENGE_ID,
        &["generate"],
        &["generate"],
        |scenario, test, expect| {
            let name = &scenario.name;
            let input = &scenario.json["input"];
            let secret = input["secretKey"].as_str().expect("secretKey");
            match expect {
                Expect::Success => {
                    let secret = ChallengeSecret::new(secret)
                        .unwrap_or_else(|e| panic!("{name}: secret refused: {e}"));
                    let challenge = challenge_from_json(&{
                        let mut object = input.clone();
                        object["id"] = Value::String(String::new());
                        object
                    });
                    let expected = scenario.str("expected");
                    assert_eq!(
                        secret.challenge_id(&challenge.binding()),
                        expected,
                        "{name}"
                    );
                    // Issued and verified through keys, and as a whole challenge.
                    let keys = ChallengeKeys::new(secret);
                    assert_eq!(keys.challenge_id(&challenge.binding()), expected, "{name}");
                    let mut issued = challenge;
                    issued.id = expected.to_owned();
                    assert!(issued.verify_id(&keys), "{name}: verify");
                    assert!(issued.clone().verify_id(&keys), "{name}: verify echo");
                }
                Expect::Error(kind) => {
                    assert_eq!(kind, "generation_error", "{name}");
                    assert!(
                        ChallengeSecret::new(secret).is_err(),
                        "{name}: secret accepted"
                    );
                }
            }
            assert_eq!(test, "generate");
        },
    );
}
