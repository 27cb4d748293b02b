//! The `digest` import: SHA-2 hashes and HMACs computed by the host, so guests whose language
//! has no fast hash inside a component (JavaScript) hash at native speed. Pure functions of
//! their input: they give a guest no way out of its sandbox.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::bindings::Algorithm;
use super::bindings::batch::replicator::plugin::digest::Host as DigestHost;
use super::runtime::Host;

/// The digest of `data` in lowercase hex, as the interface returns it.
pub fn hash(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha256 => format!("{:x}", Sha256::digest(data)),
        Algorithm::Sha384 => format!("{:x}", Sha384::digest(data)),
        Algorithm::Sha512 => format!("{:x}", Sha512::digest(data)),
    }
}

/// The HMAC of `data` under `key`, in lowercase hex.
pub fn hmac(algorithm: Algorithm, key: &[u8], data: &[u8]) -> String {
    fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> hmac::digest::Output<M> {
        let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        m.update(data);
        m.finalize().into_bytes()
    }
    match algorithm {
        Algorithm::Sha256 => format!("{:x}", mac::<Hmac<Sha256>>(key, data)),
        Algorithm::Sha384 => format!("{:x}", mac::<Hmac<Sha384>>(key, data)),
        Algorithm::Sha512 => format!("{:x}", mac::<Hmac<Sha512>>(key, data)),
    }
}

impl DigestHost for Host {
    fn hash(&mut self, algorithm: Algorithm, data: Vec<u8>) -> wasmtime::Result<String> {
        Ok(hash(algorithm, &data))
    }

    fn hmac(
        &mut self,
        algorithm: Algorithm,
        key: Vec<u8>,
        data: Vec<u8>,
    ) -> wasmtime::Result<String> {
        Ok(hmac(algorithm, &key, &data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_published_vectors() {
        // FIPS 180-2, "abc".
        assert_eq!(
            hash(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash(Algorithm::Sha384, b"abc"),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
        assert_eq!(
            hash(Algorithm::Sha512, b"abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn hmacs_match_rfc_4231() {
        // RFC 4231, test case 2: key "Jefe".
        let data = b"what do ya want for nothing?";
        assert_eq!(
            hmac(Algorithm::Sha256, b"Jefe", data),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac(Algorithm::Sha512, b"Jefe", data),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }
}
