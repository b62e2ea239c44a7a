//! Secrets in the embedded store, encrypted: XChaCha20-Poly1305 (the `chacha20poly1305`
//! crate, RustCrypto) under a 256-bit key, a fresh random 192-bit nonce per value, and the
//! secret's name as associated data (a value cannot be moved to another name).
//!
//! The key comes from `--secrets-key-file` (32 raw bytes, or their base64 on one line), or
//! `TRIPLINE_SECRETS_KEY` (base64), or else the data folder's `secrets.key`, generated at
//! first start with owner-only permissions. Losing the key loses the secrets (set them
//! again); the database alone does not give them up.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng as _;
use rusqlite::{OptionalExtension, params};
use tripline_app::ports::{SecretInfo, SecretStore, StoreError};
use tripline_core::Timestamp;

use crate::{EmbeddedStore, sql};

/// The key file's name in the data folder.
pub const KEY_FILE: &str = "secrets.key";

/// The environment variable that may hold the key (base64 of 32 bytes).
pub const KEY_ENV: &str = "TRIPLINE_SECRETS_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secrets key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the secrets key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is not a secrets key: it must hold 32 bytes, raw or as base64 on one line (make one with `head -c 32 /dev/urandom | base64`)"
    )]
    Malformed(String),
}

/// The key that encrypts the secrets.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    fn parse(bytes: &[u8], what: &str) -> Result<Self, KeyError> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Ok(SecretsKey(raw));
        }
        let text = std::str::from_utf8(bytes).unwrap_or_default().trim();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(SecretsKey)
            .ok_or_else(|| KeyError::Malformed(what.to_string()))
    }

    /// The key: from `file` when given, else from `env` (the value of
    /// [`KEY_ENV`]), else the data folder's key file, made at first start.
    pub fn load(dir: &Path, file: Option<&Path>, env: Option<&str>) -> Result<Self, KeyError> {
        if let Some(file) = file {
            let bytes = std::fs::read(file).map_err(|source| KeyError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            return Self::parse(&bytes, &file.display().to_string());
        }
        if let Some(env) = env.filter(|e| !e.trim().is_empty()) {
            return Self::parse(env.as_bytes(), KEY_ENV);
        }
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::rng().random();
                let create = |source| KeyError::Create {
                    path: path.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(create)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(create)?;
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                f.write_all(format!("{text}\n").as_bytes())
                    .map_err(create)?;
                f.sync_all().map_err(create)?;
                tracing::info!(path = %path.display(), "generated the secrets key (keep it with the data folder; without it the secrets cannot be read)");
                Ok(SecretsKey(key))
            }
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }
}

/// Makes a file owner-only (read and write).
pub(crate) fn owner_only(path: &Path, mode: u32) {
    if path.exists()
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the file owner-only");
    }
}

/// The secret store on the embedded database.
#[derive(Clone)]
pub struct EmbeddedSecrets {
    store: EmbeddedStore,
    cipher: XChaCha20Poly1305,
}

impl EmbeddedSecrets {
    pub fn new(store: EmbeddedStore, key: &SecretsKey) -> Self {
        Self {
            store,
            cipher: XChaCha20Poly1305::new((&key.0).into()),
        }
    }

    fn seal(&self, name: &str, value: &str) -> Result<([u8; 24], Vec<u8>), StoreError> {
        let nonce: [u8; 24] = rand::rng().random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Unavailable("encrypting the secret failed".into()))?;
        Ok((nonce, sealed))
    }

    fn open(&self, name: &str, nonce: &[u8], sealed: &[u8]) -> Result<String, StoreError> {
        let undecryptable = || {
            StoreError::Unavailable(format!(
                "the secret `{name}` cannot be decrypted with this key: it was set under another secrets key (the data folder's {KEY_FILE}, --secrets-key-file or {KEY_ENV}); use that key, or set the secret again"
            ).into())
        };
        if nonce.len() != 24 {
            return Err(undecryptable());
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain).map_err(|_| undecryptable())
    }
}

#[async_trait::async_trait]
impl SecretStore for EmbeddedSecrets {
    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name_owned = name.to_string();
        let row: Option<(Vec<u8>, Vec<u8>)> = self.store.read_now(|conn| {
            conn.prepare_cached("SELECT nonce, value FROM secrets WHERE name = ?1")
                .map_err(sql)?
                .query_row(params![name_owned], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sql)
        })?;
        row.map(|(nonce, sealed)| self.open(name, &nonce, &sealed))
            .transpose()
    }

    async fn set_secret(&self, name: &str, value: &str, at: Timestamp) -> Result<(), StoreError> {
        let (nonce, sealed) = self.seal(name, value)?;
        let name = name.to_string();
        self.store
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO secrets (name, nonce, value, set_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET nonce = ?2, value = ?3, set_at = ?4",
                )
                .map_err(sql)?
                .execute(params![name, nonce.to_vec(), sealed, at.millis()])
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (nonce, sealed) = self.seal(name, value)?;
        let name = name.to_string();
        self.store
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "INSERT INTO secrets (name, nonce, value, set_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .map_err(sql)?
                    .execute(params![name, nonce.to_vec(), sealed, at.millis()])
                    .map_err(sql)?;
                Ok(n > 0)
            })
            .await
    }

    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.store
            .write(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM secrets WHERE name = ?1")
                    .map_err(sql)?
                    .execute(params![name])
                    .map_err(sql)?;
                Ok(n > 0)
            })
            .await
    }

    async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError> {
        self.store
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT name, set_at FROM secrets ORDER BY name")
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(SecretInfo {
                            name: r.get(0)?,
                            set_at: Timestamp::from_millis(r.get(1)?),
                        })
                    })
                    .map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_are_sealed_per_name_and_need_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let key = SecretsKey::load(dir.path(), None, None).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = EmbeddedSecrets::new(store.clone(), &key);
        s.set_secret("crm_token", "tok-0123456789", Timestamp::from_millis(5))
            .await
            .unwrap();
        assert_eq!(
            s.secret("crm_token").await.unwrap().as_deref(),
            Some("tok-0123456789")
        );
        let names = s.secret_names().await.unwrap();
        assert_eq!(names[0].name, "crm_token");
        assert_eq!(names[0].set_at, Timestamp::from_millis(5));
        // The same key is read back from the folder; another key cannot open the value.
        let again = SecretsKey::load(dir.path(), None, None).unwrap();
        assert_eq!(again.0, key.0);
        let other = SecretsKey::parse(&[7u8; 32], "test").unwrap();
        let wrong = EmbeddedSecrets::new(store.clone(), &other);
        let e = wrong.secret("crm_token").await.unwrap_err().to_string();
        assert!(e.contains("another secrets key"), "{e}");
        // The database file does not hold the value.
        drop(s);
        drop(wrong);
        let db = std::fs::read(dir.path().join("tripline.db")).unwrap_or_default();
        let wal = std::fs::read(dir.path().join("tripline.db-wal")).unwrap_or_default();
        for bytes in [db, wal] {
            assert!(!bytes.windows(14).any(|w| w == b"tok-0123456789"));
        }
    }

    #[test]
    fn a_key_is_raw_bytes_or_base64_and_anything_else_says_how_to_make_one() {
        assert!(SecretsKey::parse(&[1u8; 32], "k").is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        assert_eq!(SecretsKey::parse(b64.as_bytes(), "k").unwrap().0, [2u8; 32]);
        let e = SecretsKey::parse(b"short", "k").unwrap_err().to_string();
        assert!(e.contains("/dev/urandom"), "{e}");
    }
}
