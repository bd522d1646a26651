//! Turning untrusted request bodies into typed values, with errors that name the field.

use serde::de::DeserializeOwned;
use std::path::{Component, Path};

/// A rejected input: which field was wrong and why, ready for an RFC 9457 problem body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The JSON field (dotted path) at fault, or `body` when the body as a whole is wrong.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a JSON object body into `T`, reporting the path of the first field that does not
/// fit. Missing fields and unknown fields are reported by name too.
pub fn parse_json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    // serde accepts a struct written as a JSON array (`[1, 2]`); an API body must be an
    // object, so anything else that is valid JSON is refused as a whole.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some()
        && first != Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(FieldError::new("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        let field = if inner.is_syntax() || inner.is_eof() {
            "body".to_string()
        } else if path != "." && !path.is_empty() {
            path
        } else if let Some(name) = backticked_name(&message) {
            // serde reports `missing field `x`` and `unknown field `x`` at the parent's
            // path, with the name only in the message.
            name
        } else {
            "body".to_string()
        };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("body is not valid JSON: {message}")
        } else {
            message
        };
        FieldError { field, message }
    })?;
    // Nothing but whitespace may follow the object.
    de.end()
        .map_err(|e| FieldError::new("body", format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

fn backticked_name(message: &str) -> Option<String> {
    let named = ["missing field", "unknown field", "duplicate field"];
    if !named.iter().any(|prefix| message.starts_with(prefix)) {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    // An empty key (`{"": 1}`) names no field: the body is at fault.
    Some(message[start..start + len].to_string()).filter(|name| !name.is_empty())
}

/// The fields every render request shares (a node's `POST /job`, an orchestrator's
/// submission), checked the same way for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFields {
    pub range: crate::FrameRange,
    pub engine: crate::Engine,
    pub format: Option<crate::ImageFormat>,
}

/// Checks `from`/`to` (required, a frame range of at most `max_frames` frames), `scene` (a
/// confined relative path), `engine` and `format` (Blender's names).
pub fn render_fields(
    from: Option<i64>,
    to: Option<i64>,
    max_frames: u64,
    scene: Option<&str>,
    engine: Option<&str>,
    format: Option<&str>,
) -> Result<RenderFields, FieldError> {
    let from =
        from.ok_or_else(|| FieldError::new("from", "required: the first frame to render"))?;
    let to = to.ok_or_else(|| FieldError::new("to", "required: the last frame to render"))?;
    let range =
        crate::FrameRange::new(from, to).map_err(|e| FieldError::new(e.field(), e.to_string()))?;
    if range.len() > max_frames {
        return Err(FieldError::new(
            "to",
            format!(
                "{} frames requested; at most {max_frames} per job",
                range.len()
            ),
        ));
    }
    if let Some(scene) = scene {
        confined_relative_path("scene", scene)?;
    }
    let engine = engine
        .map(str::parse)
        .transpose()
        .map_err(|m: String| FieldError::new("engine", m))?
        .unwrap_or_default();
    let format = format
        .map(str::parse)
        .transpose()
        .map_err(|m: String| FieldError::new("format", m))?;
    Ok(RenderFields {
        range,
        engine,
        format,
    })
}

/// Longest name of one file or folder on the file systems a farm uses.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks that `value` is a relative path that stays below the folder it is joined to:
/// plain names separated by `/`; no root, no `.` or `..`, no backslash (Blender turns `\`
/// into `/`, so `..\x` would climb out), no control characters (a newline would split
/// Blender's output lines), no name over 255 bytes. Says nothing about whether it exists.
pub fn confined_relative_path(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > 1024 {
        return Err(FieldError::new(field, "must be at most 1024 bytes"));
    }
    if value.contains('\\') || value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain backslashes or control characters",
        ));
    }
    if value.starts_with('/') {
        return Err(FieldError::new(field, "must be a relative path"));
    }
    // `Path::components` forgets a `.` in the middle and empty components (`a/./b`,
    // `a//b`): look at the text itself.
    for part in value.split('/') {
        if part.is_empty() {
            return Err(FieldError::new(
                field,
                "must not contain empty names (`//`, or a `/` at the end)",
            ));
        }
        if part == "." {
            return Err(FieldError::new(field, "must not contain `.` components"));
        }
    }
    for component in Path::new(value).components() {
        match component {
            Component::Normal(name) if name.len() > MAX_NAME_BYTES => {
                return Err(FieldError::new(
                    field,
                    format!("a name in it is longer than {MAX_NAME_BYTES} bytes"),
                ));
            }
            Component::Normal(_) => {}
            Component::CurDir => {
                return Err(FieldError::new(field, "must not contain `.` components"));
            }
            Component::ParentDir => {
                return Err(FieldError::new(field, "must not contain `..`"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(FieldError::new(field, "must be a relative path"));
            }
        }
    }
    Ok(())
}

/// Names starting with this are the node's own (its `.corral-partial-{job}` folders, which
/// a restarted node sweeps away): an output path may not use them.
pub const RESERVED_NAME_PREFIX: &str = ".corral-";

/// Checks an output pattern (`shots/a/frame_####`): a confined relative path whose last
/// part is a file name, since Blender writes `PATTERN` + frame number + extension. No part
/// of it may start with [`RESERVED_NAME_PREFIX`], and it may hold no invisible or
/// bidirectional formatting character (see [`is_invisible_format_char`]).
pub fn output_pattern(field: &str, value: &str) -> Result<(), FieldError> {
    confined_relative_path(field, value)?;
    if value.ends_with('/') {
        return Err(FieldError::new(
            field,
            "must end with a file name pattern such as `frame_####`",
        ));
    }
    if let Some(c) = value.chars().find(|&c| is_invisible_format_char(c)) {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain invisible or bidirectional formatting characters (U+{:04X})",
                c as u32
            ),
        ));
    }
    if value
        .split('/')
        .any(|name| name.starts_with(RESERVED_NAME_PREFIX))
    {
        return Err(FieldError::new(
            field,
            format!("names starting with `{RESERVED_NAME_PREFIX}` are reserved for the node's own folders"),
        ));
    }
    Ok(())
}

/// Characters that change how a name is displayed without being visible themselves:
/// bidirectional embeddings, overrides, isolates and marks (a right-to-left override makes
/// `f_####\u{202e}gnp.exe` read as `f_####exe.png`), zero-width characters, the byte
/// order mark, line and paragraph separators, and every C0/C1 control character.
pub fn is_invisible_format_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'                     // Arabic letter mark
                | '\u{180e}'               // Mongolian vowel separator
                | '\u{200b}'..='\u{200f}' // zero-width space/joiners, LRM, RLM
                | '\u{2028}'..='\u{202e}' // line/paragraph separators, LRE..RLO
                | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, LRI..PDI
                | '\u{feff}'               // byte order mark
                | '\u{fff9}'..='\u{fffb}' // interlinear annotation
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_empty_names_are_refused_wherever_they_are() {
        for bad in ["a/./b", "a//b", "a/.", "./a", "a/", "/a"] {
            assert!(confined_relative_path("scene", bad).is_err(), "{bad}");
        }
        assert!(confined_relative_path("scene", "a/b.blend").is_ok());
        assert!(confined_relative_path("scene", "a/.hidden/b").is_ok());
    }

    #[test]
    fn an_empty_key_blames_the_body() {
        let err = parse_json_object::<std::collections::BTreeMap<String, u8>>(br#"{"": "x"}"#);
        assert!(err.is_err());
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct One {
            #[allow(dead_code)]
            a: Option<u8>,
        }
        let err = parse_json_object::<One>(br#"{"": 1}"#).unwrap_err();
        assert_eq!(err.field, "body");
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        from: i64,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse_json_object::<Sample>(br#"{"from":"1; touch /tmp/x"}"#).unwrap_err();
        assert_eq!(err.field, "from");
        let err = parse_json_object::<Sample>(br#"{"from":1.5}"#).unwrap_err();
        assert_eq!(err.field, "from");
        let err = parse_json_object::<Sample>(br#"{"from":1,"inner":{"n":-1}}"#).unwrap_err();
        assert_eq!(err.field, "inner.n");
        let err = parse_json_object::<Sample>(br#"{}"#).unwrap_err();
        assert_eq!(err.field, "from");
        let err = parse_json_object::<Sample>(br#"{"from":1,"form":2}"#).unwrap_err();
        assert_eq!(err.field, "form");
        let err = parse_json_object::<Sample>(b"not json").unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.message.starts_with("body is not valid JSON"));
        let err = parse_json_object::<Sample>(br#"{"from":1} trailing"#).unwrap_err();
        assert_eq!(err.field, "body");
        let err = parse_json_object::<Sample>(br#"{"from":1,"from":2}"#).unwrap_err();
        assert_eq!(err.field, "from");
        let err = parse_json_object::<Sample>(b"[1,2]").unwrap_err();
        assert_eq!(err.field, "body");
    }

    #[test]
    fn confined_paths_reject_escapes() {
        assert!(confined_relative_path("scene", "shots/a.blend").is_ok());
        assert!(confined_relative_path("scene", "./a.blend").is_err());
        assert!(confined_relative_path("output", ".").is_err());
        assert!(confined_relative_path("output", "..\\..\\tmp\\x_####").is_err());
        assert!(confined_relative_path("output", "nl\nSaved: x").is_err());
        assert!(confined_relative_path("output", &"a".repeat(256)).is_err());
        assert!(confined_relative_path("output", &"a".repeat(255)).is_ok());
        assert!(confined_relative_path("scene", "../a.blend").is_err());
        assert!(confined_relative_path("scene", "a/../../b").is_err());
        assert!(confined_relative_path("scene", "/etc/passwd").is_err());
        assert!(confined_relative_path("scene", "").is_err());
        assert!(confined_relative_path("scene", "a\0b").is_err());
    }

    #[test]
    fn output_patterns_refuse_the_nodes_reserved_names() {
        // The node's start-up sweep removes `.corral-partial-*` folders: frames rendered
        // into one would be deleted at the next restart.
        for bad in [
            ".corral-partial-x/f_####",
            "shots/.corral-partial-01a2/f_####",
            ".corral-anything/f_####",
            "a/b/.corral-",
            ".corral-f_####",
        ] {
            let err = output_pattern("output", bad).expect_err(bad);
            assert_eq!(err.field, "output");
            assert!(err.message.contains(".corral-"), "{bad}: {err}");
        }
        for good in [
            "corral-x/f_####",
            "shots/.corral/f_####",
            "a/x.corral-y_####",
        ] {
            assert!(output_pattern("output", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn output_patterns_refuse_invisible_and_bidirectional_characters() {
        // A right-to-left override makes `f_####\u{202e}gnp.exe` read as `f_####exe.png`.
        let bad = [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}', '\u{200b}', '\u{feff}',
            '\u{2028}', '\u{0085}', '\u{009b}', '\u{001b}', '\u{007f}',
        ];
        for c in bad {
            let value = format!("shots/f_{c}####");
            let err = output_pattern("output", &value).expect_err(&format!("{:04x}", c as u32));
            assert_eq!(err.field, "output");
        }
        // Letters from any script are fine.
        assert!(output_pattern("output", "plans/plan_\u{5e9}\u{5dc}\u{5d5}\u{5dd}_####").is_ok());
        assert!(output_pattern("output", "Szene/Bild_\u{e4}\u{f6}\u{fc}_####").is_ok());
    }
}
