"""Lifecycle rules: from Hydra config to the clouds' own lifecycle engines, and back.

A rule set is a mapping ``{name: {prefix, transitions, expire_days, abort_multipart_days, select}}``. Rules are
expanded against a classified inventory into :class:`LifecycleRule` (what a cloud's engine understands: a key
prefix, transitions after N days, an expiration after N days), then rendered as an S3 ``LifecycleConfiguration``, a
GCS lifecycle JSON or an Azure management policy. Nothing here deletes or moves an object: the cloud's lifecycle
engine does, after the configuration is applied (:func:`apply_s3`, only with ``confirm=True``).

mlcost_pl-aware rules (``select: checkpoints_not_newest`` ...) are expanded into one prefix rule per checkpoint folder
they select *at planning time*: run ``apply`` again later to cover checkpoints written since.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.storage.classify import Classification
from mlcost_pl.storage.inventory import DAY_S
from mlcost_pl.storage.prices import ProviderPrices, check_fields

ID_PREFIX = "mlcost-"
SELECTS = ("checkpoints_not_newest", "checkpoints_beyond_keep_last", "checkpoints_uncommitted")
_RULE_FIELDS = ("prefix", "transitions", "expire_days", "abort_multipart_days", "select", "enabled")
S3_MAX_RULES = 1000
# S3 rejects transitions to these classes before 30 days.
_S3_MIN_30 = ("STANDARD_IA", "ONEZONE_IA")


@dataclass(frozen=True)
class LifecycleRule:
    """One rule as a cloud's lifecycle engine sees it.

    Attributes:
        id: the rule ID (``mlcost-<name>`` for ours, ``mlcost-<name>-<hash>`` for one expanded per folder).
        prefix: key prefix, relative to the scanned URL for ours (bucket keys for rules read from a bucket).
        transitions: ``((days after last modification, storage class), ...)`` in increasing days.
        expire_days: delete the object this many days after its last modification (None = never).
        abort_multipart_days: abort incomplete multipart uploads this many days after they began (None = never).
        source: the name of the rule in the rule set it came from.
        enabled: an enabled rule (rules read from a bucket may be disabled).
    """

    id: str
    prefix: str = ""
    transitions: tuple[tuple[int, str], ...] = ()
    expire_days: int | None = None
    abort_multipart_days: int | None = None
    source: str = ""
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def kinds(self) -> set[str]:
        """The kinds of action the rule takes: ``transition``, ``expiration``, ``abort_multipart`` (and others read
        from a bucket, like ``noncurrent``)."""
        out = set(self.extra.get("kinds", ()))
        if self.transitions:
            out.add("transition")
        if self.expire_days is not None:
            out.add("expiration")
        if self.abort_multipart_days is not None:
            out.add("abort_multipart")
        return out

    def matches(self, key: str) -> bool:
        """The rule's filter selects ``key``."""
        return key.startswith(self.prefix)


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a rule set, as configured (before expansion).

    Attributes:
        name: its name in the rule set.
        prefix: key prefix relative to the scanned URL (``""`` = everything, ``temporary/``).
        transitions: ``((days, storage class), ...)`` in increasing days.
        expire_days: expire after this many days (None = never).
        abort_multipart_days: abort incomplete multipart uploads after this many days (None = never).
        select: None for a plain prefix rule, or one of :data:`SELECTS` (checkpoint folders under ``prefix``).
    """

    name: str
    prefix: str = ""
    transitions: tuple[tuple[int, str], ...] = ()
    expire_days: int | None = None
    abort_multipart_days: int | None = None
    select: str | None = None


def _days(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserInputError(f"{where} must be a whole number of days >= 0, got {value!r}")
    return value


def parse_rules(rules: Mapping[str, Any] | None, provider: ProviderPrices) -> list[RuleSpec]:
    """Validate a rule set from config (``{name: {...}}``) against a cloud's price table.

    Storage classes may be named as any cloud names them (``STANDARD_IA`` on GCS becomes ``NEARLINE`` through the
    price table's ``same_as``); rules with ``enabled: false`` are skipped.

    Raises:
        ValueError: an unknown field or select, a storage class the price table lacks, transitions not going colder
            in increasing days, S3 transitions to an infrequent-access class before 30 days, an expiration not after
            the last transition, a rule with no action (each message names the rule: ``rules.<name>.<field>``).
    """
    if rules is None:
        return []
    if not isinstance(rules, Mapping):
        raise UserInputError(f"rules must be a mapping of rule name -> rule, got {type(rules).__name__}")
    out = []
    for name, body in rules.items():
        where = f"rules.{name}"
        if body is None:
            continue
        check_fields(body, _RULE_FIELDS, where)
        if not body.get("enabled", True):
            continue
        prefix = body.get("prefix") or ""
        if not isinstance(prefix, str) or prefix.startswith("/"):
            raise UserInputError(f"{where}.prefix must be a key prefix relative to url (no leading /), got {prefix!r}")
        select = body.get("select")
        if select is not None and select not in SELECTS:
            raise UserInputError(f"{where}.select must be one of {', '.join(SELECTS)} (or null), got {select!r}")
        transitions = []
        last_days, last_rank = -1, provider.lookup(provider.default_class).rank
        for i, item in enumerate(body.get("transitions") or []):
            if not isinstance(item, Mapping) or set(item) != {"days", "storage_class"}:
                raise UserInputError(f"{where}.transitions[{i}] must be {{days: N, storage_class: NAME}}, got {item!r}")
            days = _days(item["days"], f"{where}.transitions[{i}].days")
            try:
                cls = provider.lookup(str(item["storage_class"]))
            except ValueError as err:
                raise UserInputError(f"{where}.transitions[{i}].storage_class: {err}") from None
            if provider.name == "aws" and cls.name in _S3_MIN_30 and days < 30:
                raise UserInputError(f"{where}.transitions[{i}]: S3 moves objects to {cls.name} no earlier than 30 days, got days={days}")
            if days <= last_days or cls.rank <= last_rank:
                raise UserInputError(f"{where}.transitions must go to colder classes in increasing days; {cls.name} after {days} days "
                                 f"does not follow the previous one")
            transitions.append((days, cls.name))
            last_days, last_rank = days, cls.rank
        expire = body.get("expire_days")
        expire = None if expire is None else _days(expire, f"{where}.expire_days")
        if expire is not None and transitions and expire <= transitions[-1][0]:
            raise UserInputError(f"{where}.expire_days={expire} must be after the last transition ({transitions[-1][0]} days)")
        abort = body.get("abort_multipart_days")
        abort = None if abort is None else _days(abort, f"{where}.abort_multipart_days")
        if abort is not None and abort < 1:
            raise UserInputError(f"{where}.abort_multipart_days must be >= 1, got {abort}")
        if not transitions and expire is None and abort is None:
            raise UserInputError(f"{where} has no action: give transitions, expire_days or abort_multipart_days")
        if select is not None and (abort is not None or transitions):
            raise UserInputError(f"{where}: a select rule ({select}) takes only expire_days")
        out.append(RuleSpec(str(name), prefix, tuple(transitions), expire, abort, select))
    return out


def _selected_prefixes(spec: RuleSpec, classified: Classification) -> list[str]:
    prefixes = []
    for run in classified.runs:
        for folder in run.folders:
            if not folder.prefix.startswith(spec.prefix):
                continue
            if (spec.select == "checkpoints_not_newest" and folder.committed and not folder.newest_committed
                    or spec.select == "checkpoints_beyond_keep_last" and folder.group == "checkpoint_old"
                    or spec.select == "checkpoints_uncommitted" and not folder.committed):
                prefixes.append(folder.prefix)
    return prefixes


def expand(specs: Sequence[RuleSpec], classified: Classification) -> list[LifecycleRule]:
    """The engine-level rules of a rule set: one per prefix rule, one per folder a select rule picks."""
    out = []
    for spec in specs:
        if spec.select is None:
            out.append(LifecycleRule(f"{ID_PREFIX}{spec.name}", spec.prefix, spec.transitions, spec.expire_days,
                                     spec.abort_multipart_days, spec.name))
            continue
        for prefix in _selected_prefixes(spec, classified):
            digest = hashlib.sha1(prefix.encode()).hexdigest()[:10]
            out.append(LifecycleRule(f"{ID_PREFIX}{spec.name}-{digest}", prefix, (), spec.expire_days, None, spec.name))
    return out


def _overlap(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def check_overlaps(rules: Sequence[LifecycleRule], others: Sequence[LifecycleRule] = (), where: str = "bucket") -> None:
    """Two enabled rules that take the same kind of action on keys both select are an error (the outcome would
    depend on the engine's tie-breaking); ``others`` are rules already in the bucket (bucket-key prefixes, compared
    with ``rules`` whose prefixes must be bucket keys too).

    Raises:
        ValueError: naming both rules, the shared kind of action and the prefixes.
    """
    pool = [(r, "rules") for r in rules if r.enabled] + [(r, where) for r in others if r.enabled]
    for i, (a, wa) in enumerate(pool):
        for b, wb in pool[i + 1:]:
            if wa == wb == where:
                continue
            shared = a.kinds() & b.kinds()
            if shared and _overlap(a.prefix, b.prefix) and not (a.source and a.source == b.source):
                raise UserInputError(
                    f"overlapping rules: {a.id} ({wa}, prefix {a.prefix!r}) and {b.id} ({wb}, prefix {b.prefix!r}) both "
                    f"{'/'.join(sorted(shared))}; narrow one prefix or drop one rule"
                )


def check_live_checkpoints(rules: Sequence[LifecycleRule], classified: Classification) -> None:
    """No expiring rule may select the newest committed checkpoint of a live run.

    Raises:
        ValueError: naming the rule, the checkpoint and how recently its run changed.
    """
    for rule in rules:
        if rule.expire_days is None:
            continue
        for run in classified.runs:
            newest = run.newest_committed
            if not run.live or newest is None or not _overlap(rule.prefix, newest.prefix):
                continue
            idle = (classified.inventory.now - run.last_modified) / DAY_S
            raise UserInputError(
                f"rule {rule.source or rule.id} would expire {newest.prefix} (the newest committed checkpoint of the live run "
                f"{run.prefix or '.'}, last written {idle:.1f} days ago); narrow rules.{rule.source or rule.id}.prefix "
                f"or use select: checkpoints_not_newest"
            )


# --------------------------------------------------------------------------------------------------- S3
def to_s3(rules: Sequence[LifecycleRule], key_prefix: str = "") -> list[dict[str, Any]]:
    """S3 ``Rules`` entries of ``rules`` (prefixes made bucket keys by prepending ``key_prefix``)."""
    out = []
    for rule in rules:
        entry: dict[str, Any] = {"ID": rule.id, "Status": "Enabled" if rule.enabled else "Disabled",
                                 "Filter": {"Prefix": f"{key_prefix}{rule.prefix}"}}
        if rule.transitions:
            entry["Transitions"] = [{"Days": d, "StorageClass": c} for d, c in rule.transitions]
        if rule.expire_days is not None:
            entry["Expiration"] = {"Days": rule.expire_days}
        if rule.abort_multipart_days is not None:
            entry["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": rule.abort_multipart_days}
        out.append(entry)
    return out


def from_s3(entries: Sequence[Mapping[str, Any]]) -> list[LifecycleRule]:
    """Rules read from ``get_bucket_lifecycle_configuration()["Rules"]`` (prefixes are bucket keys).

    Filters other than a prefix (tags, object sizes) are read as their prefix alone, so overlap checks err on the
    side of reporting an overlap.
    """
    out = []
    for i, entry in enumerate(entries):
        filt = entry.get("Filter") or {}
        prefix = filt.get("Prefix", (filt.get("And") or {}).get("Prefix", entry.get("Prefix", ""))) or ""
        transitions = tuple((int(t["Days"]), str(t["StorageClass"])) for t in entry.get("Transitions", []) if "Days" in t)
        expiration = entry.get("Expiration") or {}
        abort = entry.get("AbortIncompleteMultipartUpload") or {}
        kinds = [k for k, key in (("transition", "Transitions"), ("noncurrent_transition", "NoncurrentVersionTransitions"),
                                  ("noncurrent_expiration", "NoncurrentVersionExpiration")) if entry.get(key)]
        if expiration and "Days" not in expiration:
            kinds.append("expiration")  # by date or expired-object delete markers
        out.append(LifecycleRule(
            id=str(entry.get("ID") or f"rule-{i}"),
            prefix=prefix,
            transitions=transitions,
            expire_days=int(expiration["Days"]) if "Days" in expiration else None,
            abort_multipart_days=int(abort["DaysAfterInitiation"]) if "DaysAfterInitiation" in abort else None,
            enabled=entry.get("Status", "Enabled") == "Enabled",
            extra={"kinds": kinds, "raw": dict(entry)},
        ))
    return out


@dataclass
class MergeResult:
    """What :func:`merge_s3` would write.

    Attributes:
        rules: the full ``Rules`` list to put.
        kept: IDs of rules already in the bucket that stay as they are.
        replaced: IDs of rules a previous mlcost_pl ``apply`` wrote, replaced by this rule set.
        added: IDs of this rule set's rules.
    """

    rules: list[dict[str, Any]]
    kept: list[str]
    replaced: list[str]
    added: list[str]


def merge_s3(existing: Sequence[Mapping[str, Any]], ours: Sequence[LifecycleRule], key_prefix: str = "") -> MergeResult:
    """Merge ``ours`` into the bucket's existing rules: rules a previous mlcost_pl apply wrote (``mlcost-*`` IDs) are
    replaced and listed, every other rule is kept verbatim.

    Raises:
        ValueError: one of ours overlaps a kept rule (same kind of action on shared keys), or the result exceeds
            S3's 1,000 rules.
    """
    parsed = from_s3(existing)
    kept = [r for r in parsed if not r.id.startswith(ID_PREFIX)]
    replaced = [r.id for r in parsed if r.id.startswith(ID_PREFIX)]
    in_bucket = [LifecycleRule(r.id, f"{key_prefix}{r.prefix}", r.transitions, r.expire_days, r.abort_multipart_days,
                               r.source, r.enabled) for r in ours]
    check_overlaps(in_bucket, kept, where="already in the bucket")
    rules = [dict(r.extra["raw"]) for r in kept] + to_s3(ours, key_prefix)
    if len(rules) > S3_MAX_RULES:
        raise UserInputError(f"the merged lifecycle configuration has {len(rules)} rules; S3 allows {S3_MAX_RULES}. "
                         f"Narrow the select rules' prefixes or raise their expire_days")
    return MergeResult(rules, [r.id for r in kept], replaced, [r.id for r in ours])


def s3_client(storage_options: Mapping[str, Any] | None = None) -> Any:
    """A boto3 S3 client with the credentials/endpoint of fsspec ``storage_options`` (s3fs's keys), else the usual
    chain (environment, ``AWS_ENDPOINT_URL``, profiles)."""
    import boto3

    opts = dict(storage_options or {})
    client_kwargs = dict(opts.get("client_kwargs") or {})
    kwargs = {
        "endpoint_url": opts.get("endpoint_url") or client_kwargs.get("endpoint_url"),
        "region_name": client_kwargs.get("region_name"),
        "aws_access_key_id": opts.get("key"),
        "aws_secret_access_key": opts.get("secret"),
        "aws_session_token": opts.get("token"),
    }
    return boto3.client("s3", **{k: v for k, v in kwargs.items() if v is not None})


def _client_error(err: Exception, bucket: str, action: str) -> Exception:
    code = str(getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__))
    text = " ".join(str(err).split())
    if code in ("AccessDenied", "AllAccessDisabled", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionError(f"bucket {bucket}: no permission to {action} ({code})")
    if code in ("NoSuchBucket", "404"):
        return FileNotFoundError(f"bucket {bucket}: no such bucket")
    return ValueError(f"bucket {bucket}: cannot {action} ({text})")


def read_s3_rules(client: Any, bucket: str) -> list[dict[str, Any]]:
    """The bucket's current lifecycle rules (``[]`` when it has none).

    Raises:
        PermissionError: not allowed to read the lifecycle configuration.
        FileNotFoundError: no such bucket.
        ValueError: the store cannot be reached.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return list(client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", []))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise _client_error(err, bucket, "read its lifecycle configuration") from None
    except BotoCoreError as err:
        raise UserInputError(f"bucket {bucket}: cannot reach the store ({' '.join(str(err).split())})") from None


def apply_s3(client: Any, bucket: str, merged: MergeResult, confirm: bool = False) -> list[dict[str, Any]] | None:
    """Put ``merged.rules`` as the bucket's lifecycle configuration when ``confirm``; return what the bucket then
    reports (``get_bucket_lifecycle_configuration``), None on a dry run. Never touches an object.

    Raises:
        PermissionError: not allowed to put the lifecycle configuration (nothing applied).
        ValueError: S3 rejected the configuration (its message).
    """
    if not confirm:
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": merged.rules})
    except ClientError as err:
        raise _client_error(err, bucket, "put its lifecycle configuration") from None
    except BotoCoreError as err:
        raise UserInputError(f"bucket {bucket}: cannot reach the store ({' '.join(str(err).split())})") from None
    return read_s3_rules(client, bucket)


# --------------------------------------------------------------------------------------------------- GCS / Azure
def to_gcs(rules: Sequence[LifecycleRule], provider: ProviderPrices, key_prefix: str = "") -> dict[str, Any]:
    """The GCS bucket lifecycle JSON (``gcloud storage buckets update gs://B --lifecycle-file=F``) of ``rules``.

    Each transition only moves objects still in a warmer class (``matchesStorageClass``), as S3 does implicitly.
    """
    out = []
    for rule in rules:
        cond: dict[str, Any] = {"matchesPrefix": [f"{key_prefix}{rule.prefix}"]} if f"{key_prefix}{rule.prefix}" else {}
        for days, cls in rule.transitions:
            rank = provider.lookup(cls).rank
            warmer = sorted((c.name for c in provider.classes.values() if c.rank < rank), key=lambda n: provider.classes[n].rank)
            out.append({"action": {"type": "SetStorageClass", "storageClass": provider.lookup(cls).name},
                        "condition": {"age": days, "matchesStorageClass": warmer, **cond}})
        if rule.expire_days is not None:
            out.append({"action": {"type": "Delete"}, "condition": {"age": rule.expire_days, **cond}})
        if rule.abort_multipart_days is not None:
            out.append({"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"age": rule.abort_multipart_days, **cond}})
    return {"lifecycle": {"rule": out}}


_AZURE_ACTIONS = {1: "tierToCool", 2: "tierToCold", 3: "tierToArchive"}


def to_azure(rules: Sequence[LifecycleRule], provider: ProviderPrices, container: str | None = None,
             key_prefix: str = "") -> dict[str, Any]:
    """The Azure Storage management policy (``az storage account management-policy create --policy @F``) of ``rules``.

    Azure has no rule for incomplete uploads (uncommitted blocks are dropped after 7 days by the service), so
    ``abort_multipart_days`` is left out.
    """
    out = []
    for rule in rules:
        actions: dict[str, Any] = {}
        for days, cls in rule.transitions:
            rank = int(provider.lookup(cls).rank)
            actions[_AZURE_ACTIONS.get(rank, "tierToArchive")] = {"daysAfterModificationGreaterThan": days}
        if rule.expire_days is not None:
            actions["delete"] = {"daysAfterModificationGreaterThan": rule.expire_days}
        if not actions:
            continue
        filters: dict[str, Any] = {"blobTypes": ["blockBlob"]}
        prefix = f"{container}/{key_prefix}{rule.prefix}" if container else f"{key_prefix}{rule.prefix}"
        if prefix:
            filters["prefixMatch"] = [prefix]
        out.append({"enabled": rule.enabled, "name": re.sub(r"[^A-Za-z0-9]", "", rule.id), "type": "Lifecycle",
                    "definition": {"actions": {"baseBlob": actions}, "filters": filters}})
    return {"rules": out}
