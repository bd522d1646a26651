//! Content-addressed files and the manifests that lay them out as a scene's workspace (the
//! remote-farm protocol, `docs/remote-farm-protocol.md`): blob hashes, the rules a
//! workspace path must keep, a manifest's validation and its canonical form and id.
//!
//! Pure: nothing here reads a file. The orchestrator checks every manifest it is sent
//! with [`Manifest::from_body`]; the client checks its own before sending, with the same
//! rules.

use crate::validate::{parse_json_object, FieldError, MAX_NAME_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;

/// Longest workspace path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most files one manifest lists.
pub const MAX_FILES: usize = 100_000;
/// Most hashes one `POST /api/v1/blobs/missing` asks about.
pub const MAX_MISSING_QUERY: usize = 10_000;

/// A blob's name: the lowercase hex SHA-256 of its bytes (64 characters). Valid by
/// construction, so it is safe in a file name and a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BlobHash(String);

impl BlobHash {
    /// Checks `value` as a blob hash; a bad one is refused naming `field`.
    pub fn parse(field: &str, value: &str) -> Result<BlobHash, FieldError> {
        let valid = value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(FieldError::new(
                field,
                "must be a SHA-256 as 64 lowercase hexadecimal characters",
            ));
        }
        Ok(BlobHash(value.to_string()))
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash::from_digest(&Sha256::digest(bytes))
    }

    /// The hash a finished [`Sha256`] hasher holds.
    pub fn from_digest(digest: &[u8]) -> BlobHash {
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        BlobHash(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first two characters: the blob store's fan-out folder.
    pub fn prefix(&self) -> &str {
        &self.0[..2]
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BlobHash::parse("hash", &s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// True for characters that change how text reads without being seen: the Unicode
/// bidirectional embeddings, overrides, isolates and marks (a right-to-left override makes
/// `x\u{202e}gnp.exe` read as `xexe.png`), zero-width characters and the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Checks a workspace path: relative, `/`-separated plain names; no leading `/`, no empty,
/// `.` or `..` component, no backslash (Blender reads `\` as a separator, so `..\x`
/// would climb out), no control or invisible/bidirectional character, at most
/// [`MAX_PATH_BYTES`] bytes and [`MAX_NAME_BYTES`] per name. A node joins it to its
/// workspace folder, so anything else could write outside it.
pub fn workspace_path(field: &str, path: &str) -> Result<(), FieldError> {
    let refuse = |why: &str| Err(FieldError::new(field, why));
    if path.is_empty() {
        return refuse("must not be empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return refuse(&format!("must be at most {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return refuse("must be a relative path (no leading `/`)");
    }
    if path.contains('\\') {
        return refuse("must use `/` between names, never a backslash");
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || is_invisible(*c)) {
        return refuse(&format!(
            "must not contain control, invisible or bidirectional characters (U+{:04X})",
            c as u32
        ));
    }
    for name in path.split('/') {
        match name {
            "" => return refuse("must not have an empty name (`//` or a trailing `/`)"),
            "." => return refuse("must not contain `.` as a name"),
            ".." => return refuse("must not contain `..`"),
            n if n.len() > MAX_NAME_BYTES => {
                return refuse(&format!(
                    "a name in it is longer than {MAX_NAME_BYTES} bytes"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// One file of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path in the workspace (see [`workspace_path`]).
    pub path: String,
    /// Its blob.
    #[schema(value_type = String)]
    pub hash: BlobHash,
    /// Its size in bytes.
    pub size: u64,
}

/// Which blob is which file of a scene's workspace, and which file is the scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The scene: one of the files' paths, ending in `.blend`.
    pub root: String,
    pub files: Vec<ManifestFile>,
}

/// `POST /api/v1/manifests` as it arrives: fields optional so a missing one is named.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestBody {
    root: Option<String>,
    files: Option<Vec<ManifestFile>>,
}

impl Manifest {
    /// Parses and validates a manifest body; errors name `root` or `files[i].path`.
    pub fn from_body(body: &[u8]) -> Result<Manifest, FieldError> {
        // A bad entry is named as `files[3].hash`.
        let raw: ManifestBody = parse_json_object(body)?;
        let manifest = Manifest {
            root: raw
                .root
                .ok_or_else(|| FieldError::new("root", "required: the scene's path"))?,
            files: raw
                .files
                .ok_or_else(|| FieldError::new("files", "required: the workspace's files"))?,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule of the protocol: at most [`MAX_FILES`] files, each path valid
    /// and unique, no path both a file and a folder of another, `root` one of them and a
    /// `.blend`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.files.is_empty() {
            return Err(FieldError::new("files", "must list at least the scene"));
        }
        if self.files.len() > MAX_FILES {
            return Err(FieldError::new(
                "files",
                format!("at most {MAX_FILES} files per manifest"),
            ));
        }
        let mut paths: HashSet<&str> = HashSet::with_capacity(self.files.len());
        for (i, file) in self.files.iter().enumerate() {
            let field = format!("files[{i}].path");
            workspace_path(&field, &file.path)?;
            if !paths.insert(file.path.as_str()) {
                return Err(FieldError::new(field, "is listed twice"));
            }
        }
        // `a/b` as a file and `a/b/c.png`: a node cannot lay out both.
        for (i, file) in self.files.iter().enumerate() {
            let mut folder = file.path.as_str();
            while let Some((parent, _)) = folder.rsplit_once('/') {
                if paths.contains(parent) {
                    return Err(FieldError::new(
                        format!("files[{i}].path"),
                        format!("lies inside `{parent}`, which is listed as a file"),
                    ));
                }
                folder = parent;
            }
        }
        workspace_path("root", &self.root)?;
        if !self.root.ends_with(".blend") {
            return Err(FieldError::new("root", "must be a .blend file"));
        }
        if !paths.contains(self.root.as_str()) {
            return Err(FieldError::new("root", "must be one of the files' paths"));
        }
        Ok(())
    }

    /// The canonical form: files sorted by path, compact JSON (`root`, then `files`, each
    /// `path`, `hash`, `size`). Its SHA-256 is the manifest's id.
    pub fn canonical_json(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.files.sort_by(|a, b| a.path.cmp(&b.path));
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&sorted).unwrap_or_default()
    }

    /// The manifest's id: the hash of its canonical form.
    pub fn id(&self) -> BlobHash {
        BlobHash::of(&self.canonical_json())
    }

    /// Every distinct blob it names.
    pub fn hashes(&self) -> Vec<BlobHash> {
        let mut seen = HashSet::new();
        self.files
            .iter()
            .filter(|f| seen.insert(&f.hash))
            .map(|f| f.hash.clone())
            .collect()
    }
}

/// `POST /api/v1/blobs/missing`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MissingQuery {
    /// At most 10000 blob hashes.
    #[schema(value_type = Vec<String>)]
    pub hashes: Vec<BlobHash>,
}

impl MissingQuery {
    pub fn from_body(body: &[u8]) -> Result<MissingQuery, FieldError> {
        let q: MissingQuery = parse_json_object(body)?;
        if q.hashes.len() > MAX_MISSING_QUERY {
            return Err(FieldError::new(
                "hashes",
                format!("at most {MAX_MISSING_QUERY} per request"),
            ));
        }
        Ok(q)
    }
}

/// `POST /api/v1/blobs/missing`'s answer: the hashes the farm lacks, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingBlobs {
    #[schema(value_type = Vec<String>)]
    pub missing: Vec<BlobHash>,
}

/// `POST /api/v1/manifests`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestCreated {
    /// The manifest's id (its canonical form's SHA-256), to name in a job's `manifest`.
    #[schema(value_type = String)]
    pub id: BlobHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn body(root: &str, paths: &[&str]) -> String {
        let files: Vec<_> = paths
            .iter()
            .map(|p| serde_json::json!({"path": p, "hash": H1, "size": 1}))
            .collect();
        serde_json::json!({"root": root, "files": files}).to_string()
    }

    fn field_of(root: &str, paths: &[&str]) -> String {
        Manifest::from_body(body(root, paths).as_bytes())
            .expect_err("refused")
            .field
    }

    #[test]
    fn hashes_are_64_lowercase_hex() {
        assert!(BlobHash::parse("hash", H1).is_ok());
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &format!("{}g", &H1[..63]),
            &format!("{H1}0"),
            "../../../../etc/passwd",
        ] {
            assert_eq!(BlobHash::parse("hash", bad).unwrap_err().field, "hash");
        }
        // The SHA-256 of nothing, as every tool prints it.
        assert_eq!(
            BlobHash::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(BlobHash::parse("h", H2).unwrap().prefix(), "22");
    }

    #[test]
    fn good_manifests_pass() {
        let m = Manifest::from_body(
            body(
                "shots/a.blend",
                &[
                    "shots/a.blend",
                    "textures/wood.png",
                    "_external/home/ann/x y/é.png",
                ],
            )
            .as_bytes(),
        )
        .expect("valid");
        assert_eq!(m.files.len(), 3);
        assert_eq!(m.hashes().len(), 1, "one blob, named three times");
    }

    #[test]
    fn bad_paths_name_their_file() {
        let cases: &[(&[&str], &str)] = &[
            (&["a.blend", "../etc/passwd"], "files[1].path"),
            (&["a.blend", "x/../../y"], "files[1].path"),
            (&["a.blend", "/etc/passwd"], "files[1].path"),
            (&["a.blend", "..\\..\\x"], "files[1].path"),
            (&["a.blend", "tex\\wood.png"], "files[1].path"),
            (&["a.blend", "./x.png"], "files[1].path"),
            (&["a.blend", "a//b.png"], "files[1].path"),
            (&["a.blend", "dir/"], "files[1].path"),
            (&["a.blend", ""], "files[1].path"),
            (&["a.blend", "nl\nSaved: x.png"], "files[1].path"),
            (&["a.blend", "x\u{202e}gnp.exe"], "files[1].path"),
            (&["a.blend", "zero\u{200b}width.png"], "files[1].path"),
            (&["a.blend", "a.png", "a.png"], "files[2].path"),
            (&["a.blend", "tex", "tex/wood.png"], "files[2].path"),
        ];
        for (paths, field) in cases {
            assert_eq!(field_of("a.blend", paths), *field, "{paths:?}");
        }
        let long_name = "n".repeat(256);
        assert_eq!(
            field_of("a.blend", &["a.blend", &long_name]),
            "files[1].path"
        );
        let long_path = vec!["n"; 2100].join("/");
        assert_eq!(
            field_of("a.blend", &["a.blend", &long_path]),
            "files[1].path"
        );
        assert!(workspace_path("p", &"n".repeat(255)).is_ok());
    }

    #[test]
    fn the_root_is_a_listed_blend() {
        assert_eq!(field_of("a.png", &["a.png"]), "root");
        assert_eq!(field_of("b.blend", &["a.blend"]), "root");
        assert_eq!(field_of("../a.blend", &["a.blend"]), "root");
        assert_eq!(field_of("/a.blend", &["a.blend"]), "root");
        let missing_root =
            format!(r#"{{"files": [{{"path": "a.blend", "hash": "{H1}", "size": 1}}]}}"#);
        assert_eq!(
            Manifest::from_body(missing_root.as_bytes())
                .unwrap_err()
                .field,
            "root"
        );
        assert_eq!(
            Manifest::from_body(br#"{"root": "a.blend", "files": []}"#)
                .unwrap_err()
                .field,
            "files"
        );
    }

    #[test]
    fn bad_hashes_and_sizes_name_their_field() {
        let bad_hash =
            r#"{"root": "a.blend", "files": [{"path": "a.blend", "hash": "xyz", "size": 1}]}"#;
        assert_eq!(
            Manifest::from_body(bad_hash.as_bytes()).unwrap_err().field,
            "files[0].hash"
        );
        let bad_size = format!(
            r#"{{"root": "a.blend", "files": [{{"path": "a.blend", "hash": "{H1}", "size": -1}}]}}"#
        );
        assert_eq!(
            Manifest::from_body(bad_size.as_bytes()).unwrap_err().field,
            "files[0].size"
        );
        let extra = format!(
            r#"{{"root": "a.blend", "files": [{{"path": "a.blend", "hash": "{H1}", "size": 1, "mode": 7}}]}}"#
        );
        assert_eq!(
            Manifest::from_body(extra.as_bytes()).unwrap_err().field,
            "files[0].mode"
        );
    }

    #[test]
    fn the_id_ignores_the_order_of_files() {
        let a = Manifest {
            root: "a.blend".into(),
            files: vec![
                ManifestFile {
                    path: "z.png".into(),
                    hash: BlobHash::parse("h", H2).unwrap(),
                    size: 2,
                },
                ManifestFile {
                    path: "a.blend".into(),
                    hash: BlobHash::parse("h", H1).unwrap(),
                    size: 1,
                },
            ],
        };
        let mut b = a.clone();
        b.files.reverse();
        assert_eq!(a.id(), b.id());
        let canonical = String::from_utf8(a.canonical_json()).unwrap();
        assert_eq!(
            canonical,
            format!(
                r#"{{"root":"a.blend","files":[{{"path":"a.blend","hash":"{H1}","size":1}},{{"path":"z.png","hash":"{H2}","size":2}}]}}"#
            )
        );
        assert_eq!(a.id(), BlobHash::of(canonical.as_bytes()));
        let mut c = a.clone();
        c.files[0].size = 3;
        assert_ne!(a.id(), c.id(), "every field counts");
    }

    #[test]
    fn missing_queries_are_bounded() {
        let q = MissingQuery::from_body(format!(r#"{{"hashes": ["{H1}", "{H2}"]}}"#).as_bytes())
            .unwrap();
        assert_eq!(q.hashes.len(), 2);
        let bad = MissingQuery::from_body(format!(r#"{{"hashes": ["{H1}", "nope"]}}"#).as_bytes());
        assert_eq!(bad.unwrap_err().field, "hashes[1]");
        let many: Vec<&str> = vec![H1; MAX_MISSING_QUERY + 1];
        let body = serde_json::json!({ "hashes": many }).to_string();
        assert_eq!(
            MissingQuery::from_body(body.as_bytes()).unwrap_err().field,
            "hashes"
        );
    }
}
