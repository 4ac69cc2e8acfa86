//! `[source] after_commit`: a committed batch's files deleted, or moved
//! below `move_to` under the same names.
//!
//! Each removal checks first that the object is still the version planned,
//! so that a file dropped again at a committed file's path is left for the
//! next pass, as new input. A removal that fails, or that a crash cuts
//! short, is done by the next planning pass, which finds the committed
//! files still listed; removing what is gone already is done.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use sluice_engine::Result;
use sluice_engine::batch::InputObject;
use sluice_engine::source::AfterCommit;

use super::FilesSource;

/// Files removed at once.
const AT_ONCE: usize = 16;

impl FilesSource {
    /// Deletes or moves `inputs`; how many it removed.
    pub(super) async fn settle_inputs(&self, inputs: &[InputObject]) -> Result<u64> {
        if self.after_commit == AfterCommit::Keep {
            return Ok(0);
        }
        let mut removed = 0;
        for some in inputs.chunks(AT_ONCE) {
            let done = futures::future::try_join_all(some.iter().map(|input| self.settle_one(input))).await?;
            removed += done.into_iter().filter(|removed| *removed).count() as u64;
        }
        Ok(removed)
    }

    async fn settle_one(&self, input: &InputObject) -> Result<bool> {
        let path = self.object_path(&input.path)?;
        let meta = match self.store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(other) => return Err(other.into()),
        };
        let now = InputObject {
            path: input.path.clone(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: meta.last_modified,
            ..InputObject::default()
        };
        if now.key() != input.key() {
            tracing::info!(path = %input.path, "not removed after its commit: the file changed since, and is new input");
            return Ok(false);
        }
        let done = match &self.move_to {
            None => self.store.delete(&path).await,
            Some((_, prefix)) => {
                let to = Path::parse(format!("{prefix}/{}", input.path)).map_err(object_store::Error::from)?;
                self.store.rename(&path, &to).await
            }
        };
        match done {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }
}
