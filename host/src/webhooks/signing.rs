//! Standard Webhooks signatures: a secret is 32 random bytes shown once as
//! `whsec_<base64>`; a message is signed as
//! `v1,base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))`, and during a
//! rotation the `webhook-signature` header carries one such signature per
//! live secret, separated by spaces, so a receiver holding either verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a secret as shown.
pub const SECRET_PREFIX: &str = "whsec_";

/// One signing secret's bytes.
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl SigningKey {
    /// A new random secret.
    pub fn generate() -> SigningKey {
        let bytes: [u8; 32] = rand::random();
        SigningKey(Zeroizing::new(bytes.to_vec()))
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> SigningKey {
        SigningKey(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as shown to the admin, once: `whsec_<base64>`.
    pub fn shown(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.0)))
    }

    /// `v1,<base64 signature>` of the message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: a signature per key, space-separated.
pub fn signature_header(
    keys: &[SigningKey],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> String {
    keys.iter()
        .map(|k| k.sign(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries (their test vector).
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = SigningKey::from_bytes(Zeroizing::new(secret));
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
