//! What planning makes of input the log holds in an earlier version:
//! `[source] on_change` decides, the source finds out whether a changed
//! object only grew (reading a few KiB where its planned version ended),
//! and each append, rewrite or change left unread is a warning naming the
//! file.
//!
//! ```text
//! listed ─► unseen (pure) ─┬─ new paths ──────────────────────────────┐
//!                          └─ changed ─► appended_to? ─► resolve_change ┤
//!                                                                      ▼
//!                                  fingerprint (tail digests) ─► cut into batches
//! ```

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use super::{ChangePlan, Changed, Unseen, resolve_change, unseen};
use crate::Result;
use crate::batch::{InputKey, InputObject};
use crate::log::{History, LogState};
use crate::source::{OnChange, Source};
use futures::{StreamExt, TryStreamExt};

/// Changed objects checked for an append at once.
const CHECKS_AT_ONCE: usize = 16;

/// Versions left unread under `on_change = "ignore"` that were warned
/// about already: every pass lists them again, and one warning is enough.
static LEFT_UNREAD: LazyLock<Mutex<HashSet<InputKey>>> = LazyLock::new(Mutex::default);

/// The inputs to plan from what `source` lists now: new paths whole, and
/// each changed one as `on_change` says (its appended part, the whole new
/// version, or nothing), with the tail digests that let a later growth be
/// told from a rewrite.
pub async fn inputs_to_plan(
    source: &dyn Source,
    discovered: Vec<InputObject>,
    state: &LogState,
    history: &History,
) -> Result<Vec<InputObject>> {
    let Unseen { mut new, changed } = unseen(discovered, state, history);
    let on_change = source.on_change();
    let checked: Vec<(Changed, bool)> = futures::stream::iter(changed.into_iter().map(|changed| async move {
        let appended = match on_change {
            OnChange::Append => source.appended_to(&changed.before, &changed.now).await?,
            OnChange::NewVersion | OnChange::Ignore => false,
        };
        Ok::<_, crate::Error>((changed, appended))
    }))
    .buffered(CHECKS_AT_ONCE)
    .try_collect()
    .await?;
    for (changed, appended) in checked {
        let (before, now) = (changed.before.size, changed.now.size);
        match resolve_change(on_change, changed, appended) {
            ChangePlan::ReadAppended(part) => {
                tracing::warn!(
                    file = %part.path,
                    "{} grew from {before} to {now} bytes since it was planned: reading only the {} bytes appended",
                    part.path,
                    now - before
                );
                new.push(part);
            }
            ChangePlan::ReadWhole(whole) => {
                let why = match on_change {
                    OnChange::Append if now > before => "it grew, but the bytes it had are not the same",
                    OnChange::Append => "it did not only grow",
                    OnChange::NewVersion | OnChange::Ignore => "on_change = \"new_version\"",
                };
                tracing::warn!(
                    file = %whole.path,
                    "{} changed since it was planned ({before} bytes, {now} now; {why}): reading it whole as a new version",
                    whole.path
                );
                new.push(whole);
            }
            ChangePlan::Leave(left) => {
                let first = LEFT_UNREAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(left.key());
                if first {
                    tracing::warn!(
                        file = %left.path,
                        "{} changed since it was planned ({before} bytes, {now} now): on_change = \"ignore\" leaves it unread",
                        left.path
                    );
                }
            }
        }
    }
    source.fingerprint(&mut new).await?;
    Ok(new)
}
