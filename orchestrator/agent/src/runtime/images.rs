//! Building images without a registry: an image is a tar of files imported into the engine
//! (`docker import`). A dynamically linked host binary is imported together with the shared
//! libraries `ldd` lists, so any program on the host can become a minimal image — this is how the
//! agent makes its pause image, and how tests make theirs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::TryStreamExt;

/// What goes into an imported image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// `repo:tag`.
    pub tag: String,
    /// Host files and where they go in the image.
    pub files: Vec<(PathBuf, String)>,
    /// Symlinks (path in the image, target).
    pub symlinks: Vec<(String, String)>,
    /// Dockerfile-style changes (`ENTRYPOINT ["/pause"]`, `CMD …`, `ENV …`).
    pub changes: Vec<String>,
    /// Add the shared libraries the files need.
    pub with_libraries: bool,
}

/// Shared libraries of a binary as `ldd` reports them (empty for static binaries, and where
/// there is no `ldd`: an image of Skiff's static binaries has none).
pub fn shared_libraries(binary: &Path) -> std::io::Result<Vec<PathBuf>> {
    let out = match std::process::Command::new("ldd").arg(binary).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The image as a tar archive.
pub fn image_tar(spec: &ImageSpec) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(true);
    // Docker's importer rejects GNU sparse entries, which tar writes for files with holes
    // (large debug binaries have them).
    builder.sparse(false);
    let mut files: Vec<(PathBuf, String)> = spec.files.clone();
    if spec.with_libraries {
        let mut libs = BTreeSet::new();
        for (src, _) in &spec.files {
            libs.extend(shared_libraries(src)?);
        }
        files.extend(libs.into_iter().map(|l| {
            let dst = l.to_string_lossy().into_owned();
            (l, dst)
        }));
    }
    let mut dirs = BTreeSet::new();
    for (_, dst) in &files {
        let mut p = Path::new(dst.trim_start_matches('/')).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, d, std::io::empty())?;
    }
    for dir in ["tmp", "etc", "proc", "sys", "dev"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    for (src, dst) in &files {
        builder.append_path_with_name(src, dst.trim_start_matches('/'))?;
    }
    for (path, target) in &spec.symlinks {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        builder.append_link(&mut header, path.trim_start_matches('/'), target)?;
    }
    builder.into_inner()
}

/// Import the image into the engine (replacing an image with the same tag).
pub async fn import(docker: &Docker, spec: &ImageSpec) -> anyhow::Result<()> {
    let tar = image_tar(spec)?;
    let (repo, tag) = spec
        .tag
        .rsplit_once(':')
        .unwrap_or((spec.tag.as_str(), "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(spec.changes.clone())
        .build();
    docker
        .create_image(Some(options), Some(bollard::body_full(tar.into())), None)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Whether the engine has an image.
pub async fn exists(docker: &Docker, tag: &str) -> bool {
    docker.inspect_image(tag).await.is_ok()
}

/// The pause image: the `skiff-pause` binary found next to the running executable.
pub async fn ensure_pause_image(docker: &Docker, tag: &str) -> anyhow::Result<()> {
    if exists(docker, tag).await {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let pause = exe.with_file_name("skiff-pause");
    if !pause.exists() {
        anyhow::bail!(
            "the pause image {tag} is missing and {} was not found to build it (build it with `cargo build -p skiff-pause`, or pass --pod-infra-container-image)",
            pause.display()
        );
    }
    tracing::info!(%tag, "importing the pause image");
    import(
        docker,
        &ImageSpec {
            tag: tag.to_owned(),
            files: vec![(pause, "/pause".into())],
            changes: vec![r#"ENTRYPOINT ["/pause"]"#.into()],
            with_libraries: true,
            ..Default::default()
        },
    )
    .await
}

/// The image that runs `skiffd` itself (the log collector DaemonSet uses it): made from the
/// running executable, with `ENTRYPOINT ["/skiffd"]`.
pub fn skiffd_image() -> String {
    format!("skiff/skiffd:{}", env!("CARGO_PKG_VERSION"))
}

/// Import [`skiffd_image`] from the running executable unless the engine has it from this very
/// build (a label records the executable's size and modification time, so a rebuilt `skiffd`
/// is imported again under the same tag).
pub async fn ensure_skiffd_image(docker: &Docker, tag: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let meta = std::fs::metadata(&exe)?;
    let build = format!(
        "{}-{}",
        meta.len(),
        meta.modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    );
    if let Ok(image) = docker.inspect_image(tag).await {
        let current = image
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get("dev.skiff.build").cloned());
        if current.as_deref() == Some(build.as_str()) {
            return Ok(());
        }
    }
    tracing::info!(%tag, exe = %exe.display(), "importing the skiffd image");
    import(
        docker,
        &ImageSpec {
            tag: tag.to_owned(),
            files: vec![(exe, "/skiffd".into())],
            changes: vec![
                r#"ENTRYPOINT ["/skiffd"]"#.into(),
                format!("LABEL dev.skiff.build={build}"),
            ],
            with_libraries: true,
            ..Default::default()
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tars_carry_files_libraries_and_links() {
        let spec = ImageSpec {
            tag: "t:1".into(),
            files: vec![(PathBuf::from("/bin/true"), "/bin/true".into())],
            symlinks: vec![("/bin/yes-true".into(), "true".into())],
            with_libraries: true,
            ..Default::default()
        };
        let tar = image_tar(&spec).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"bin/true".to_owned()), "{names:?}");
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(names.contains(&"bin/yes-true".to_owned()));
    }
}
