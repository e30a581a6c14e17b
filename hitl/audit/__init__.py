"""The audit chain: an append-only, hash-chained log of everything that decided a release.

Each review submission, adjudication or correction, dataset version, registered model, regression report and
approval decision is one entry in the review store's database (`audit_entries`). An entry carries the SHA-256
of what it refers to (`payload_sha256`: the annotations as stored, the full dataset artifact, the model's
files and its training run, the report files, the decision), the hash of the previous entry, and its own hash
over all of that. Its `anchor` is an HMAC of its hash under a key kept outside the store (`audit.key`, mode
0600, apart from any auth credentials), so whoever edits an entry and rehashes everything after it is still
caught. The head is also written beside the key (`audit.head`) and as the tag `hitl.audit_head` on each model
version, so removed tail entries are caught too.

There is no update or delete here. `verify` walks the chain and the objects it refers to, and names the first
entry that does not match.

`chain`: entries, hashing, the key and head, the log, one entry's place in the chain, export.
`evidence`: what each kind of entry records and how `verify` checks it against the live objects.
"""

