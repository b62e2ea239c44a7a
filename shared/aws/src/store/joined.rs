//! One item for a message and the run it starts. A run that took its message's id, time
//! and workflow (`App::run_of_message`) is written with the message inside its item: the
//! admission is one `PutItem` (only if absent: a redelivery finds it and is a duplicate),
//! and the finish an `UpdateItem` that leaves the message's attributes as they are. That
//! saves the inbox item's write unit per run, as long as the joined item stays under
//! 1 KB through the finish (a write is billed on the whole item).
//!
//! It stays small because the message is stored *against the run's trigger input*: a
//! webhook's input repeats the message's headers, method, path and body, so the message
//! (`mz`) is deflated with that input as a preset dictionary and keeps only what the
//! input does not already say. The dictionary is the input serialized again on reading
//! (a run's input never changes), its last 32 KiB (deflate's window: no reference reaches
//! further back); `mzk` holds its checksum, so a mismatch is an error, never a wrong
//! message.

use aws_sdk_dynamodb::primitives::Blob;
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress_to_output, create_comp_flags_from_zip_params,
};
use tripline_app::ports::InboxMessage;

use super::*;

/// The message deflated against its run's input.
const MZ: &str = "mz";
/// The checksum of the dictionary `mz` was deflated with.
const MZK: &str = "mzk";

/// DynamoDB's largest item (names and values).
const ITEM_LIMIT: usize = 400 * 1024;

/// Room for a run item's attributes besides its record (keys, status, times).
const ITEM_ATTRIBUTES: usize = 4 * 1024;

/// The largest message joined to its run. A joined message stays in the item while the
/// run's record grows up to the item budget, so message and budget must fit DynamoDB's
/// limit together; a larger message keeps an inbox item of its own.
fn joined_message_max(item_budget: usize) -> usize {
    (64 * 1024).min(ITEM_LIMIT.saturating_sub(item_budget + ITEM_ATTRIBUTES))
}

/// The largest message inflated back from a joined item (a joined item is under the item
/// budget, so anything larger is corrupt or hostile).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What an update of a run may change; the rest of its item (keys, time, workflow, and a
/// joined message) stays as admitted.
const RUN_BODIES: [&str; 3] = ["doc", "z", "blob"];

/// The part of a dictionary deflate can refer back to: its last 32 KiB.
fn window(dict: &[u8]) -> &[u8] {
    &dict[dict.len().saturating_sub(32 * 1024)..]
}

/// Raw deflate of `dict` then `data`, flushed to a byte boundary between the two; the
/// first part's output is left out, so the result decodes only after it
/// ([`inflate_after`]) and `data` costs only what `dict` does not already say.
fn deflate_after(dict: &[u8], data: &[u8]) -> Vec<u8> {
    let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(6, 0, 0));
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let prefix = deflate_part(&mut c, dict, TDEFLFlush::Sync, &mut out);
    deflate_part(&mut c, data, TDEFLFlush::Finish, &mut out);
    out.split_off(prefix)
}

/// Deflates `input` into `out`; returns `out`'s length after it.
fn deflate_part(
    c: &mut CompressorOxide,
    input: &[u8],
    flush: TDEFLFlush,
    out: &mut Vec<u8>,
) -> usize {
    let (status, _) = compress_to_output(c, input, flush, |b| {
        out.extend_from_slice(b);
        true
    });
    debug_assert!(matches!(status, TDEFLStatus::Okay | TDEFLStatus::Done));
    out.len()
}

/// The data [`deflate_after`] deflated after `dict`. Back-references count bytes of
/// output, not of the stream, so any deflate of `dict` flushed the same way can precede
/// the stored part.
fn inflate_after(dict: &[u8], tail: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(6, 0, 0));
    let mut stream = Vec::with_capacity(dict.len() / 2 + tail.len());
    deflate_part(&mut c, dict, TDEFLFlush::Sync, &mut stream);
    stream.extend_from_slice(tail);
    let all = miniz_oxide::inflate::decompress_to_vec_with_limit(&stream, dict.len() + limit)
        .map_err(|e| format!("{:?}", e.status))?;
    all.get(dict.len()..)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "shorter than its dictionary".to_string())
}

/// FNV-1a, 32 bits: the dictionary's checksum.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    })
}

/// An item's size as DynamoDB counts it (names and values; numbers by their digits).
fn stored_size(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

impl DynamoStore {
    /// `run`'s item (`run_item`, as encoded) with `m` inside it, when the run took the
    /// message's id, time and workflow, its record is in the item (not in S3) and the
    /// two fit the item budget together; `None`: they are written as two items.
    pub(super) fn joined_item(&self, run: &Run, run_item: &Item, m: &InboxMessage) -> Option<Item> {
        let by_run = admit::listed_by_run(m, std::slice::from_ref(run_item));
        if !by_run || run_item.contains_key("blob") {
            return None;
        }
        // Deflate rarely shrinks a message eightfold: a larger one is not tried.
        if m.body.len() > 8 * joined_message_max(self.settings.item_budget) {
            return None;
        }
        let mut data = serde_json::to_vec(m).ok()?;
        data.push(0);
        data.extend_from_slice(&m.body);
        let input = serde_json::to_vec(&run.trigger_input).ok()?;
        let dict = window(&input);
        let mz = deflate_after(dict, &data);
        if mz.len() > joined_message_max(self.settings.item_budget) {
            return None;
        }
        let mut item = run_item.clone();
        item.insert("trigger".into(), s(&m.trigger));
        item.insert("outcome".into(), s(m.outcome.kind()));
        item.insert(MZK.into(), n(checksum(dict)));
        item.insert(MZ.into(), AttributeValue::B(Blob::new(mz)));
        // An ended run's item is kept as long as the longer of the two records.
        if let (Some(run_ends), Some(message_ends)) =
            (get_n(&item, "expires"), self.message_expires(m))
        {
            let keep = run_ends.max(message_ends.millis() / 1000);
            item.insert("expires".into(), n(keep));
        }
        (stored_size(&item) <= self.settings.item_budget).then_some(item)
    }

    /// Whether `item` is a run's item with its message inside.
    pub(super) fn is_joined(item: &Item) -> bool {
        item.contains_key(MZ)
    }

    /// The message inside a joined item (see [`Self::joined_item`]).
    pub(super) async fn joined_message(&self, item: &Item) -> Result<InboxMessage, StoreError> {
        let bad = |why: String| corrupt("inbox message", why);
        let Some(AttributeValue::B(z)) = item.get(MZ) else {
            return Err(bad("no message in the run's item".into()));
        };
        let run = self
            .read_run(item)
            .await?
            .ok_or_else(|| bad("no run record beside it".into()))?;
        let input = serde_json::to_vec(&run.trigger_input).map_err(|e| bad(e.to_string()))?;
        let dict = window(&input);
        if get_n(item, MZK) != Some(i64::from(checksum(dict))) {
            return Err(bad(
                "its run's input is not the one it was stored against".into()
            ));
        }
        let data = inflate_after(dict, z.as_ref(), MAX_MESSAGE_BYTES)
            .map_err(|e| bad(format!("deflated message: {e}")))?;
        let split = data
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("no end to its metadata".into()))?;
        // As text, like the inbox's `meta`: one instance of the message's decoder in the
        // binaries, not a second one for bytes.
        let meta = std::str::from_utf8(&data[..split]).map_err(|e| bad(e.to_string()))?;
        let mut m: InboxMessage = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
        m.body = data[split + 1..].to_vec();
        Ok(m)
    }

    /// Writes `item` (a run's next version, as `run_item` encodes it) over version
    /// `expected`: an `UpdateItem` of what a run's progress changes (status, version,
    /// record, expiry), so a joined message stays as admitted. Billed like a `PutItem`:
    /// on the whole item.
    pub(super) async fn update_run(&self, mut item: Item, expected: u64) -> Result<(), StoreError> {
        let id = item.remove("id").unwrap_or_else(|| s(""));
        let mut update = self
            .db
            .update_item()
            .table_name(&self.settings.runs_table)
            .key("id", id)
            .condition_expression("#v = :expected")
            .expression_attribute_values(":expected", n(expected));
        let changed = ["status", "v", "expires"].into_iter().chain(RUN_BODIES);
        let (mut sets, mut removes) = (Vec::new(), Vec::new());
        for (i, name) in changed.enumerate() {
            update = update.expression_attribute_names(format!("#a{i}"), name);
            match item.remove(name) {
                Some(value) => {
                    sets.push(format!("#a{i} = :a{i}"));
                    update = update.expression_attribute_values(format!(":a{i}"), value);
                }
                None => removes.push(format!("#a{i}")),
            }
        }
        update = update.expression_attribute_names("#v", "v");
        let mut expr = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match update.update_expression(expr).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(failed("UpdateItem (run)", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_deflated_after_a_dictionary_comes_back_only_with_it() {
        let dict = br#"{"body":{"id":12345,"user":"bench-user"},"headers":{"content-type":"application/json"}}"#;
        let data = br#"{"headers":[["content-type","application/json"]]}\0{"id":12345,"user":"bench-user"}"#;
        let tail = deflate_after(dict, data);
        assert!(
            tail.len() < miniz_oxide::deflate::compress_to_vec(data, 6).len(),
            "the dictionary saves nothing: {} bytes",
            tail.len()
        );
        assert_eq!(inflate_after(dict, &tail, 1 << 20).unwrap(), data);
        let other = br#"{"body":{"id":99999,"user":"someone-else"},"headers":{"accept":"*/*"}}"#;
        assert_ne!(
            inflate_after(other, &tail, 1 << 20).ok().as_deref(),
            Some(&data[..])
        );
        assert_eq!(
            inflate_after(b"", &deflate_after(b"", b"x"), 16).unwrap(),
            b"x"
        );
    }

    #[test]
    fn a_large_message_round_trips_and_its_limit_holds() {
        let dict: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let tail = deflate_after(&dict, &data);
        assert_eq!(inflate_after(&dict, &tail, data.len()).unwrap(), data);
        assert!(inflate_after(&dict, &tail, data.len() - 1).is_err());
        // Only the window is kept as a dictionary, and what repeats it costs almost nothing.
        let kept = window(&dict);
        assert_eq!(kept.len(), 32 * 1024);
        let repeat = &dict[dict.len() - 4000..];
        let tail = deflate_after(kept, repeat);
        assert!(tail.len() < 40, "{} bytes for a repeat", tail.len());
        assert_eq!(inflate_after(kept, &tail, repeat.len()).unwrap(), repeat);
    }

    #[test]
    fn a_run_input_serializes_the_same_after_a_round_trip() {
        let input = serde_json::json!({"body": {"b": 1.5, "a": [1, -2, 3e300, "x\u{0}y"], "z": null},
            "headers": {"x-b": "1", "x-a": "2"}, "big": 18446744073709551615u64, "neg": -9223372036854775808i64});
        let once = serde_json::to_vec(&input).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), once);
    }
}
