//! Where the master key comes from: a file that only the server's OS user can read
//! (`pgauth.master_key_file`) or the standard output of a command (`pgauth.master_key_command`,
//! like PostgreSQL's `ssl_passphrase_command`). The key never passes through SQL.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::keys::{check_key_file_mode, parse_master_key, MasterKey};
use crate::error::{AuthError, AuthResult};

/// Read and check a key file: owned by the server's user, no group/other access. Errors do not
/// name the file (clients see them; the SQL layer writes the path to the server log only).
pub fn read_key_file(path: &str) -> AuthResult<MasterKey> {
    let unreadable = |e: std::io::Error| {
        AuthError::MasterKeyInvalid(format!(
            "cannot read the file pgauth.master_key_file names: {}",
            e.kind()
        ))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let server_uid = unsafe { libc::geteuid() };
    check_key_file_mode(meta.mode(), meta.uid(), server_uid)?;
    let text = Zeroizing::new(std::fs::read(path).map_err(unreadable)?);
    parse_master_key(&text)
}

/// Run the command with `/bin/sh -c` and read the key from its standard output. Its standard
/// error is discarded (it might echo secrets into the server log).
pub fn run_key_command(command: &str) -> AuthResult<MasterKey> {
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| {
            AuthError::MasterKeyInvalid(format!("cannot run the master key command: {}", e.kind()))
        })?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(AuthError::MasterKeyInvalid(format!(
            "the master key command failed ({})",
            output.status
        )));
    }
    parse_master_key(&stdout)
}

/// A configured source, as the settings describe it; `None` when neither setting is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(String),
    Command(String),
}

impl KeySource {
    /// The command wins when both are set.
    pub fn from_settings(file: Option<&str>, command: Option<&str>) -> Option<Self> {
        match (
            file.filter(|s| !s.is_empty()),
            command.filter(|s| !s.is_empty()),
        ) {
            (_, Some(c)) => Some(KeySource::Command(c.to_string())),
            (Some(f), None) => Some(KeySource::File(f.to_string())),
            (None, None) => None,
        }
    }

    pub fn load(&self) -> AuthResult<MasterKey> {
        match self {
            KeySource::File(path) => read_key_file(path),
            KeySource::Command(cmd) => run_key_command(cmd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn temp_file(name: &str, contents: &str, mode: u32) -> String {
        let path = std::env::temp_dir().join(format!("pgauth-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn file_with_safe_mode_loads() {
        let path = temp_file("ok", &format!("{HEX}\n"), 0o600);
        assert!(read_key_file(&path).is_ok());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn file_readable_by_others_is_refused() {
        let path = temp_file("loose", HEX, 0o644);
        let err = read_key_file(&path).err().unwrap();
        assert!(err.to_string().contains("600"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_file_is_a_clear_error_without_its_path() {
        let err = read_key_file("/nonexistent/pgauth.key").err().unwrap();
        assert!(matches!(err, AuthError::MasterKeyInvalid(_)));
        assert!(!err.to_string().contains("nonexistent"), "{err}");
        let path = temp_file("loose-path", HEX, 0o644);
        let err = read_key_file(&path).err().unwrap();
        assert!(!err.to_string().contains(&path), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn command_output_is_the_key() {
        assert!(run_key_command(&format!("echo {HEX}")).is_ok());
        let err = run_key_command("exit 3").err().unwrap();
        assert!(err.to_string().contains("failed"), "{err}");
        let err = run_key_command("echo not-a-key").err().unwrap();
        assert!(!err.to_string().contains("not-a-key"), "{err}");
    }

    #[test]
    fn command_wins_over_file() {
        assert_eq!(
            KeySource::from_settings(Some("/f"), Some("cmd")),
            Some(KeySource::Command("cmd".into()))
        );
        assert_eq!(KeySource::from_settings(Some(""), None), None);
    }
}
