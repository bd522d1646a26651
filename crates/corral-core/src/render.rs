//! Render settings a job may choose: the engine and the image format, by Blender's own names.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Render engines, spelled the way Blender's `-E` flag spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Engine {
    #[default]
    #[serde(rename = "CYCLES")]
    Cycles,
    #[serde(rename = "BLENDER_EEVEE")]
    Eevee,
    #[serde(rename = "BLENDER_WORKBENCH")]
    Workbench,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Cycles, Engine::Eevee, Engine::Workbench];

    /// The name Blender's `-E` flag takes.
    pub fn blender_name(self) -> &'static str {
        match self {
            Engine::Cycles => "CYCLES",
            Engine::Eevee => "BLENDER_EEVEE",
            Engine::Workbench => "BLENDER_WORKBENCH",
        }
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        match upper.as_str() {
            "CYCLES" => Ok(Engine::Cycles),
            "BLENDER_EEVEE" | "EEVEE" => Ok(Engine::Eevee),
            "BLENDER_WORKBENCH" | "WORKBENCH" => Ok(Engine::Workbench),
            _ => Err(format!(
                "unknown engine `{s}`; expected one of CYCLES, BLENDER_EEVEE, BLENDER_WORKBENCH"
            )),
        }
    }
}

/// Still-image formats a frame can be written in (Blender's `-F` names). Movie formats are
/// left out on purpose: a farm renders frames in chunks on many machines, and a movie file
/// cannot be assembled from chunks written in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageFormat {
    Png,
    Jpeg,
    Bmp,
    Tiff,
    OpenExr,
    OpenExrMultilayer,
    Tga,
    Hdr,
    Webp,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 9] = [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::OpenExr,
        ImageFormat::OpenExrMultilayer,
        ImageFormat::Tga,
        ImageFormat::Hdr,
        ImageFormat::Webp,
    ];

    /// The name Blender's `-F` flag takes.
    pub fn blender_name(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG",
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::OpenExr => "OPEN_EXR",
            ImageFormat::OpenExrMultilayer => "OPEN_EXR_MULTILAYER",
            ImageFormat::Tga => "TGA",
            ImageFormat::Hdr => "HDR",
            ImageFormat::Webp => "WEBP",
        }
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        ImageFormat::ALL
            .into_iter()
            .find(|f| f.blender_name() == upper || (upper == "EXR" && *f == ImageFormat::OpenExr))
            .ok_or_else(|| {
                let names: Vec<_> = ImageFormat::ALL.iter().map(|f| f.blender_name()).collect();
                format!(
                    "unknown image format `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The frame file types Corral carries, as (extension, content type). A type with several
/// extensions lists the one Corral writes first.
pub const FRAME_TYPES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("exr", "image/x-exr"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("bmp", "image/bmp"),
    ("webp", "image/webp"),
    ("hdr", "image/vnd.radiance"),
    ("tga", "image/x-tga"),
    ("jp2", "image/jp2"),
    ("j2c", "image/x-j2c"),
    ("rgb", "image/x-rgb"),
    ("cin", "image/x-cineon"),
    ("dpx", "image/x-dpx"),
];

/// The content type of a frame file, by its extension (Blender names files by format);
/// `application/octet-stream` for any other.
pub fn frame_content_type(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    FRAME_TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or("application/octet-stream", |(_, t)| t)
}

/// The extension a frame of `content_type` is stored under (parameters ignored, case
/// ignored); `None` for a type that is not a frame format.
pub fn frame_extension(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    FRAME_TYPES
        .iter()
        .find(|(_, t)| *t == essence)
        .map(|(e, _)| *e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_types_go_both_ways() {
        assert_eq!(frame_content_type("frame_0001.PNG"), "image/png");
        assert_eq!(frame_content_type("frame_0001.exr"), "image/x-exr");
        assert_eq!(frame_content_type("frame_0001"), "application/octet-stream");
        assert_eq!(frame_extension("image/jpeg"), Some("jpg"));
        assert_eq!(frame_extension("Image/TIFF; charset=x"), Some("tif"));
        assert_eq!(frame_extension("text/html"), None);
        for (ext, ty) in FRAME_TYPES {
            assert_eq!(frame_content_type(&format!("f.{ext}")), *ty);
            let stored = frame_extension(ty).unwrap();
            assert_eq!(frame_content_type(&format!("f.{stored}")), *ty);
        }
    }

    #[test]
    fn names_round_trip_through_from_str() {
        for engine in Engine::ALL {
            assert_eq!(engine.blender_name().parse::<Engine>(), Ok(engine));
        }
        for format in ImageFormat::ALL {
            assert_eq!(format.blender_name().parse::<ImageFormat>(), Ok(format));
        }
        assert_eq!("eevee".parse::<Engine>(), Ok(Engine::Eevee));
        assert!("FFMPEG".parse::<ImageFormat>().is_err());
        assert!("RENDERMAN".parse::<Engine>().is_err());
    }

    #[test]
    fn serde_uses_blender_names() {
        assert_eq!(
            serde_json::to_string(&Engine::Eevee).unwrap(),
            "\"BLENDER_EEVEE\""
        );
        assert_eq!(
            serde_json::to_string(&ImageFormat::OpenExr).unwrap(),
            "\"OPEN_EXR\""
        );
    }
}
