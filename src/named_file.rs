//! Files the operator names (the config, secrets, keys, certificates, a key set): read whole,
//! but never past [`MOST`] bytes, so that a path to a device or to a file that keeps growing
//! (`/dev/urandom`, a log) is an error at once rather than a hang and the process's memory.

use std::io::{self, Read as _};
use std::path::Path;

/// The most a named file may hold: far above any config, secret, key, certificate chain or
/// key set.
pub const MOST: u64 = 4 * 1024 * 1024;

/// The file's bytes.
///
/// # Errors
/// When it cannot be read, or holds more than [`MOST`] bytes.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MOST + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MOST {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("holds more than {MOST} bytes"),
        ));
    }
    Ok(bytes)
}

/// The file's text.
///
/// # Errors
/// As [`read`], and when it is not UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// [`read`] on a blocking thread, for a file read again while serving.
///
/// # Errors
/// As [`read`].
pub async fn read_blocking(path: &Path) -> io::Result<Vec<u8>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || read(&path))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_limit_or_a_device_is_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-named-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let most = usize::try_from(MOST).unwrap();
        std::fs::write(&path, vec![b'a'; most]).unwrap();
        assert_eq!(read(&path).unwrap().len(), most);
        std::fs::write(&path, vec![b'a'; most + 1]).unwrap();
        let error = read(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert!(error.to_string().contains("more than"), "{error}");
        // Endless: read to the limit and refused, not read forever.
        assert_eq!(
            read(Path::new("/dev/zero")).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert_eq!(
            read_to_string(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&path, "text\n").unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "text\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
