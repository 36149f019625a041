//! Who signs for an account: a [`Signer`] gives its public key and signs messages, possibly
//! far away (a remote key service, a hardware wallet), so signing is asynchronous.
//!
//! [`Keypair`] is the local signer; [`CallbackSigner`] adapts any function. Every signature a
//! signer returns is checked against its public key before it is used, so a signer that
//! answers for another key, or with garbage, fails with [`SignError::BadSignature`] instead of
//! producing a payment that the network would refuse.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::{Address, Keypair, verify_ed25519};
use crate::BoxFuture;

/// Why a signer did not sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The signer refused or failed (a remote service down, a user who said no).
    #[error("the signer refused: {0}")]
    Refused(String),
    /// The signer answered with a signature that does not verify under its public key.
    #[error("the signer's signature does not verify under its public key")]
    BadSignature,
}

/// Signs ed25519 messages for one Stellar account.
///
/// Implement it for a remote or hardware signer; [`Keypair`] implements it for a local secret
/// key. `Debug` output of an implementation must never show a secret.
///
/// ```
/// use tower_paywall::stellar::{Keypair, Signer, verify_ed25519};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signer: &dyn Signer = &Keypair::from_seed([1; 32]);
/// let signature = signer.sign(b"hello").await.unwrap();
/// assert!(verify_ed25519(&signer.public_key(), b"hello", &signature));
/// # });
/// ```
pub trait Signer: Send + Sync + fmt::Debug {
    /// The raw ed25519 public key.
    fn public_key(&self) -> [u8; 32];

    /// Signs `message` (ed25519).
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<[u8; 64], SignError>>;

    /// The account address (`G…`).
    fn address(&self) -> Address {
        Address::Account(self.public_key())
    }
}

impl Signer for Keypair {
    fn public_key(&self) -> [u8; 32] {
        Keypair::public_key(self)
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<[u8; 64], SignError>> {
        Box::pin(std::future::ready(Ok(Keypair::sign(self, message))))
    }
}

impl<T: Signer + ?Sized> Signer for Arc<T> {
    fn public_key(&self) -> [u8; 32] {
        (**self).public_key()
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<[u8; 64], SignError>> {
        (**self).sign(message)
    }
}

type SignFn = dyn Fn(Vec<u8>) -> BoxFuture<'static, Result<[u8; 64], SignError>> + Send + Sync;

/// A signer made of a public key and a function that signs: the way to plug in a key service
/// or a wallet without writing a type.
///
/// ```
/// use tower_paywall::stellar::{CallbackSigner, Keypair, SignError, Signer};
///
/// let key = Keypair::from_seed([1; 32]);
/// let public_key = key.public_key();
/// let signer = CallbackSigner::new(public_key, move |message: Vec<u8>| {
///     let key = key.clone();
///     async move { Ok::<_, SignError>(key.sign(&message)) }
/// });
/// assert_eq!(signer.public_key(), public_key);
/// ```
pub struct CallbackSigner {
    public_key: [u8; 32],
    sign: Box<SignFn>,
}

impl CallbackSigner {
    /// A signer for `public_key` that signs with `sign`.
    pub fn new<F, Fut>(public_key: [u8; 32], sign: F) -> CallbackSigner
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<[u8; 64], SignError>> + Send + 'static,
    {
        CallbackSigner {
            public_key,
            sign: Box::new(move |message| Box::pin(sign(message))),
        }
    }
}

impl fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackSigner({})", Address::Account(self.public_key))
    }
}

impl Signer for CallbackSigner {
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<[u8; 64], SignError>> {
        (self.sign)(message.to_vec())
    }
}

/// Signs `message` with `signer` and checks the signature under its public key.
pub(crate) async fn sign_checked(
    signer: &dyn Signer,
    message: &[u8],
) -> Result<[u8; 64], SignError> {
    let signature = signer.sign(message).await?;
    if !verify_ed25519(&signer.public_key(), message, &signature) {
        return Err(SignError::BadSignature);
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn a_callback_signer_signs_and_its_debug_shows_the_address_only() {
        let key = Keypair::from_seed([1; 32]);
        let inner = key.clone();
        let signer = CallbackSigner::new(key.public_key(), move |message: Vec<u8>| {
            let key = inner.clone();
            async move { Ok(key.sign(&message)) }
        });
        let signature = runtime().block_on(sign_checked(&signer, b"m")).unwrap();
        assert_eq!(signature, key.sign(b"m"));
        assert_eq!(
            format!("{signer:?}"),
            "CallbackSigner(GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR)"
        );
        assert!(!format!("{key:?}").contains(&key.secret_seed()));
    }

    #[test]
    fn a_signature_under_another_key_or_a_refusal_is_an_error() {
        let other = Keypair::from_seed([2; 32]);
        let liar = CallbackSigner::new(Keypair::from_seed([1; 32]).public_key(), move |m| {
            let other = other.clone();
            async move { Ok(other.sign(&m)) }
        });
        assert_eq!(
            runtime().block_on(sign_checked(&liar, b"m")),
            Err(SignError::BadSignature)
        );
        let refusing = CallbackSigner::new([9; 32], |_| async {
            Err(SignError::Refused("the user said no".into()))
        });
        assert_eq!(
            runtime().block_on(sign_checked(&refusing, b"m")),
            Err(SignError::Refused("the user said no".into()))
        );
    }
}
