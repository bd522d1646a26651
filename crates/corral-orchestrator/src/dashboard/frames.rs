//! Where the dashboard reads a rendered frame ([`FrameSource`]: frames nodes uploaded to
//! this orchestrator, [`Uploaded`], else the folder nodes share with it, [`SharedFolder`]),
//! and how a frame becomes a thumbnail:
//! EXR frames tone-mapped (Reinhard, then sRGB), 16-bit frames brought to 8 bits, all
//! scaled to fit 320×240 and written as PNG beside the other cached media.

use super::MediaError;
use crate::store::FrameRecord;
use async_trait::async_trait;
use corral_core::JobId;
use image::{DynamicImage, ImageBuffer, Rgba, RgbaImage};
use std::path::{Path, PathBuf};

/// Largest thumbnail, in pixels.
pub const THUMBNAIL_WIDTH: u32 = 320;
pub const THUMBNAIL_HEIGHT: u32 = 240;

/// Finds the bytes of a frame a node reported saved. The one place that knows where frames
/// are.
#[async_trait]
pub trait FrameSource: Send + Sync {
    /// A local, readable file holding the frame.
    async fn local_path(&self, job: JobId, frame: &FrameRecord) -> Result<PathBuf, MediaError>;
}

/// Frames at the paths nodes reported, read only when they resolve inside the folder this
/// orchestrator was told to trust (`--frames`), symbolic links resolved first.
pub struct SharedFolder {
    root: Option<PathBuf>,
}

impl SharedFolder {
    pub fn new(root: Option<PathBuf>) -> SharedFolder {
        // Resolved once, so a frame's resolved path can be compared with it.
        let root = root.map(|r| r.canonicalize().unwrap_or(r));
        SharedFolder { root }
    }
}

#[async_trait]
impl FrameSource for SharedFolder {
    async fn local_path(&self, _job: JobId, frame: &FrameRecord) -> Result<PathBuf, MediaError> {
        let Some(root) = &self.root else {
            return Err(MediaError::Unreadable(
                "this orchestrator does not read frames: start it with --frames DIR naming the \
                 folder the nodes write to (corral up does this itself)"
                    .into(),
            ));
        };
        confine(root, Path::new(&frame.path)).await
    }
}

/// Frames uploaded to this orchestrator (recorded at their path under `DATA/frames`), read
/// only when they resolve inside it; any other frame from the shared folder.
pub struct Uploaded {
    /// `DATA/frames`, absolute (it may not exist yet: resolved when a frame is read).
    root: PathBuf,
    shared: SharedFolder,
}

impl Uploaded {
    pub fn new(root: PathBuf, shared: SharedFolder) -> Uploaded {
        Uploaded { root, shared }
    }
}

#[async_trait]
impl FrameSource for Uploaded {
    async fn local_path(&self, job: JobId, frame: &FrameRecord) -> Result<PathBuf, MediaError> {
        let reported = Path::new(&frame.path);
        if !reported.starts_with(&self.root) {
            return self.shared.local_path(job, frame).await;
        }
        let root = tokio::fs::canonicalize(&self.root).await.map_err(|e| {
            MediaError::Unreadable(format!("the uploaded frames folder cannot be read: {e}"))
        })?;
        // The job's own folder: a recorded path never reaches another job's frames.
        confine(&root.join(job.to_string()), reported).await
    }
}

/// `reported` resolved (symbolic links included) to a regular file inside `root`, or why not.
pub async fn confine(root: &Path, reported: &Path) -> Result<PathBuf, MediaError> {
    let outside = || {
        MediaError::Unreadable(format!(
            "the frame's file is not inside the frames folder `{}` this orchestrator reads",
            root.display()
        ))
    };
    if !reported.is_absolute() {
        return Err(outside());
    }
    let resolved = tokio::fs::canonicalize(reported).await.map_err(|e| {
        MediaError::Unreadable(format!(
            "the frame's file cannot be read here ({e}); nodes on other machines need a \
             shared frames folder"
        ))
    })?;
    if !resolved.starts_with(root) {
        return Err(outside());
    }
    let meta = tokio::fs::metadata(&resolved)
        .await
        .map_err(|e| MediaError::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(outside());
    }
    Ok(resolved)
}

/// The content type of a frame file, by its extension (Blender names files by format).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "exr" => "image/x-exr",
        "tif" | "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "hdr" => "image/vnd.radiance",
        _ => "application/octet-stream",
    }
}

/// True for frames a browser or a video encoder cannot show as they are.
pub fn is_hdr(path: &Path) -> bool {
    matches!(content_type(path), "image/x-exr" | "image/vnd.radiance")
}

/// An image made fit for an 8-bit screen: floating-point (EXR) pixels tone-mapped, deeper
/// integer pixels scaled down.
pub fn displayable(img: DynamicImage) -> RgbaImage {
    match img {
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            let linear = img.into_rgba32f();
            let (w, h) = linear.dimensions();
            ImageBuffer::from_fn(w, h, |x, y| {
                let Rgba([r, g, b, a]) = *linear.get_pixel(x, y);
                Rgba([
                    tone_map(r),
                    tone_map(g),
                    tone_map(b),
                    (a.clamp(0.0, 1.0) * 255.0).round() as u8,
                ])
            })
        }
        other => other.into_rgba8(),
    }
}

/// Linear scene light to an 8-bit sRGB value: Reinhard's `x / (1 + x)` keeps highlights
/// from clipping, then the sRGB curve.
pub fn tone_map(linear: f32) -> u8 {
    let x = if linear.is_finite() {
        linear.max(0.0)
    } else {
        0.0
    };
    let mapped = x / (1.0 + x);
    let srgb = if mapped <= 0.003_130_8 {
        12.92 * mapped
    } else {
        1.055 * mapped.powf(1.0 / 2.4) - 0.055
    };
    (srgb.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Decodes `source`, makes it displayable and small, and writes it as PNG to `target`
/// (through a temporary name, so a half-written thumbnail is never served).
pub fn make_thumbnail(source: &Path, target: &Path) -> Result<(), MediaError> {
    let img = image::ImageReader::open(source)
        .map_err(|e| MediaError::Unreadable(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| MediaError::Unreadable(e.to_string()))?
        .decode()
        .map_err(|e| MediaError::Undecodable(e.to_string()))?;
    // Made displayable first, then scaled: the image crate's fast thumbnail filter is
    // meant for 8- and 16-bit pixels, and mixes channels of floating-point ones.
    let pixels = DynamicImage::ImageRgba8(displayable(img));
    let pixels = if pixels.width() > THUMBNAIL_WIDTH || pixels.height() > THUMBNAIL_HEIGHT {
        pixels.thumbnail(THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT)
    } else {
        pixels
    };
    let dir = target
        .parent()
        .ok_or_else(|| MediaError::Io("thumbnail path has no folder".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| MediaError::Io(e.to_string()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp.png",
        target
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("thumb"),
        std::process::id()
    ));
    pixels
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| MediaError::Io(e.to_string()))?;
    std::fs::rename(&tmp, target).map_err(|e| MediaError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use corral_core::NodeId;
    use image::{ImageBuffer, Luma, Rgb};

    fn record(path: &Path) -> FrameRecord {
        FrameRecord {
            frame: 1,
            node: NodeId::new("n"),
            path: path.display().to_string(),
            done_at: Utc::now(),
        }
    }

    #[test]
    fn tone_mapping_keeps_highlights_below_white() {
        assert_eq!(tone_map(0.0), 0);
        assert_eq!(tone_map(-3.0), 0);
        assert_eq!(tone_map(f32::NAN), 0);
        // 1.0 maps to 0.5 linear, 0.735 in sRGB.
        assert_eq!(tone_map(1.0), 188);
        assert!(tone_map(100.0) >= 252 && tone_map(100.0) < 255);
        assert!(tone_map(0.2) < tone_map(0.4));
    }

    #[test]
    fn exr_and_16_bit_frames_become_8_bit_thumbnails() {
        let dir = tempfile::tempdir().expect("temp dir");
        // An EXR of 640×480 with a bright left half and a black right half.
        let exr = dir.path().join("frame.exr");
        let hdr: ImageBuffer<Rgb<f32>, Vec<f32>> = ImageBuffer::from_fn(640, 480, |x, _| {
            if x < 320 {
                Rgb([1.0, 4.0, 0.0])
            } else {
                Rgb([0.0, 0.0, 0.0])
            }
        });
        DynamicImage::ImageRgb32F(hdr)
            .save(&exr)
            .expect("write EXR");
        let thumb = dir.path().join("thumbs/1.png");
        make_thumbnail(&exr, &thumb).expect("thumbnail of an EXR");
        let img = image::open(&thumb)
            .expect("thumbnail is an image")
            .into_rgba8();
        assert_eq!(img.dimensions(), (320, 240));
        let Rgba([r, g, b, a]) = *img.get_pixel(10, 10);
        assert_eq!((r, b, a), (188, 0, 255));
        assert!(g > 225, "4.0 maps near white, not clipped: {g}");
        assert_eq!(img.get_pixel(300, 10).0[..3], [0, 0, 0]);

        // A 16-bit grey PNG: its top byte is what an 8-bit screen shows.
        let deep = dir.path().join("deep.png");
        let grey: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(64, 48, Luma([0x8080]));
        DynamicImage::ImageLuma16(grey)
            .save(&deep)
            .expect("write 16-bit PNG");
        let thumb = dir.path().join("thumbs/2.png");
        make_thumbnail(&deep, &thumb).expect("thumbnail of a 16-bit PNG");
        let img = image::open(&thumb).expect("thumbnail");
        assert_eq!(img.color(), image::ColorType::Rgba8);
        assert_eq!((img.width(), img.height()), (64, 48));
        assert_eq!(img.into_rgba8().get_pixel(0, 0).0, [128, 128, 128, 255]);

        // Not an image: a clear error, no thumbnail.
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not a png").expect("write junk");
        let err = make_thumbnail(&junk, &dir.path().join("thumbs/3.png")).unwrap_err();
        assert!(matches!(err, MediaError::Undecodable(_)), "{err}");
        assert!(!dir.path().join("thumbs/3.png").exists());
    }

    #[tokio::test]
    async fn only_frames_inside_the_frames_folder_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("frames");
        std::fs::create_dir_all(root.join("job")).expect("frames folder");
        let inside = root.join("job/frame_0001.png");
        std::fs::write(&inside, b"x").expect("frame");
        let secret = dir.path().join("secret.png");
        std::fs::write(&secret, b"x").expect("outside file");
        std::os::unix::fs::symlink(&secret, root.join("job/link.png")).expect("symlink");

        let source = SharedFolder::new(Some(root.clone()));
        let job = JobId::new();
        let found = source
            .local_path(job, &record(&inside))
            .await
            .expect("inside");
        assert_eq!(found, inside.canonicalize().expect("canonical"));
        for refused in [
            secret.clone(),
            root.join("job/link.png"),
            root.join("job/../../secret.png"),
            PathBuf::from("job/frame_0001.png"),
            root.join("job"),
            root.join("job/missing.png"),
        ] {
            let err = source.local_path(job, &record(&refused)).await;
            assert!(
                matches!(err, Err(MediaError::Unreadable(_))),
                "{}",
                refused.display()
            );
        }
        let none = SharedFolder::new(None)
            .local_path(job, &record(&inside))
            .await;
        assert!(matches!(none, Err(MediaError::Unreadable(m)) if m.contains("--frames")));
    }
}
