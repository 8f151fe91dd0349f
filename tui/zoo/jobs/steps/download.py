"""download: fetch the variant's published files (and its base and merge-first adapters) into the Hub cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.compat import StrEnum
from tui.zoo.catalog import Recipe
from tui.zoo.jobs.errors import JobError
from tui.zoo.jobs.hashing import hash_files
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult


class RepoRole(StrEnum):
    MODEL = "model"
    """The variant's own release (full weights, delta, XOR file or LoRA adapter)."""
    BASE = "base"
    """The base model a recipe starts from."""
    ADAPTER = "adapter"
    """A ``merge_first`` adapter merged into the base before the variant's own."""
    VISION = "vision"
    """The BLIP-2 checkpoint a vision side is converted from (only its vision shards)."""
    PROJECTION = "projection"
    """The repo holding the projection checkpoint of a vision side."""


@dataclass(frozen=True)
class DownloadedRepo:
    role: RepoRole
    repo: str
    revision: str
    directory: Path
    """huggingface_hub's snapshot folder."""
    files: dict[str, str]
    """sha256 of each downloaded file, keyed by its path in the repo."""


@dataclass(frozen=True)
class Downloaded(StepResult):
    step = StepName.DOWNLOAD

    snapshots: tuple[DownloadedRepo, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "snapshots": [
                {
                    "role": s.role,
                    "repo": s.repo,
                    "revision": s.revision,
                    "directory": str(s.directory),
                    "files": s.files,
                }
                for s in self.snapshots
            ]
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Downloaded:
        return cls(
            tuple(
                DownloadedRepo(RepoRole(s["role"]), s["repo"], s["revision"], Path(s["directory"]), s["files"])
                for s in record["snapshots"]
            )
        )

    def outputs(self) -> list[Path]:
        return [s.directory for s in self.snapshots]

    def of(self, role: RepoRole) -> list[DownloadedRepo]:
        return [s for s in self.snapshots if s.role is role]

    @property
    def model(self) -> DownloadedRepo:
        return self.of(RepoRole.MODEL)[0]


class Download(Step[Downloaded]):
    result_type = Downloaded

    def run(self, context: StepContext) -> Downloaded:
        variant = context.variant
        assert variant.hub_id is not None, "the catalog marks variants without weights local-only"
        repos: list[tuple[RepoRole, str, tuple[str, ...]]] = [(RepoRole.MODEL, variant.hub_id, variant.files)]
        repos += [(RepoRole.ADAPTER, hub_id, ()) for hub_id in variant.merge_first]
        if variant.recipe is not Recipe.NONE and context.build.user_base is None:
            if variant.base_hub_id is None:
                raise JobError(
                    f"{variant.id} is rebuilt from {variant.base}, which is not on the Hub; "
                    "give your copy with `zootui pull ID --base PATH`"
                )
            repos.append((RepoRole.BASE, variant.base_hub_id, ()))
        fetched = [self._fetch(context, role, repo_id, patterns) for role, repo_id, patterns in repos]
        if variant.sees_images:
            assert variant.vision_hub_id and variant.projection_hub_id and variant.projection_file
            fetched.append(self._fetch(context, RepoRole.VISION, variant.vision_hub_id, self._vision_files(context)))
            fetched.append(
                self._fetch(context, RepoRole.PROJECTION, variant.projection_hub_id, (variant.projection_file,))
            )
        return Downloaded(tuple(fetched))

    @classmethod
    def _vision_files(cls, context: StepContext) -> tuple[str, ...]:
        """The files of the BLIP-2 repo the vision side needs: its config, and the shards its index lists
        for the vision tower, the Q-Former and the query tokens (a whole repo when it is one file)."""
        from converters import ConversionError, vision_shards

        repo_id = context.variant.vision_hub_id
        assert repo_id is not None
        listing = cls._fetch(context, RepoRole.VISION, repo_id, ("config.json", "*.index.json"))
        index = next((name for name in sorted(listing.files) if name.endswith(".index.json")), None)
        if index is None:
            return ("config.json", "*.safetensors", "pytorch_model.bin")
        try:
            return ("config.json", index, *vision_shards(listing.directory / index))
        except ConversionError as error:
            raise JobError(str(error)) from error

    @staticmethod
    def _fetch(context: StepContext, role: RepoRole, repo_id: str, patterns: tuple[str, ...]) -> DownloadedRepo:
        # huggingface_hub is imported when a job downloads: the browser imports the job modules at start.
        from tui.zoo.hub import DownloadProgress, HubError, download

        def on_download(p: DownloadProgress) -> None:
            context.report(p.done, p.total, f"{repo_id}: {p.detail}")

        try:
            snapshot = download(
                repo_id,
                patterns=patterns,
                cache_dir=context.hub_cache,
                token=context.hub_token,
                on_progress=on_download,
            )
        except HubError as error:
            raise JobError(str(error)) from error
        files = [snapshot.directory / name for name in snapshot.files]
        hashes = hash_files(context, files, snapshot.directory, repo_id, known=snapshot.sha256)
        return DownloadedRepo(role, repo_id, snapshot.commit, snapshot.directory, hashes)
