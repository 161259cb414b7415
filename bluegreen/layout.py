"""Where things live on a host, in one place (see DESIGN.md, "On each host")."""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.config import Config


@dataclass(frozen=True)
class Layout:
    root: str

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    def release(self, version: str) -> str:
        return f"{self.root}/releases/{version}"

    @property
    def slots_dir(self) -> str:
        return f"{self.root}/slots"

    def slot(self, slot: str) -> str:
        return f"{self.root}/slots/{slot}"

    @property
    def shared(self) -> str:
        return f"{self.root}/shared"

    @property
    def env_file(self) -> str:
        return f"{self.root}/shared/env"

    @property
    def cookie(self) -> str:
        return f"{self.root}/shared/cookie"

    @property
    def bg(self) -> str:
        return f"{self.root}/bg"

    @property
    def state(self) -> str:
        return f"{self.root}/bg/state.json"

    @property
    def journal(self) -> str:
        return f"{self.root}/bg/journal.jsonl"

    @property
    def lock(self) -> str:
        return f"{self.root}/bg/lock"

    @property
    def master_cache(self) -> str:
        """The nginx master bg found last (:mod:`bluegreen.mastercache`): a cache."""
        return f"{self.root}/bg/nginx-master"

    @property
    def uploads(self) -> str:
        return f"{self.root}/bg/uploads"

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    def log(self, slot: str) -> str:
        return f"{self.root}/logs/{slot}.log"

    @property
    def run(self) -> str:
        return f"{self.root}/run"

    def pid(self, slot: str) -> str:
        return f"{self.root}/run/{slot}.pid"

    def tmp(self, slot: str) -> str:
        return f"{self.root}/run/{slot}.tmp"

    @property
    def directories(self) -> tuple[str, ...]:
        return (
            self.releases,
            self.slots_dir,
            self.shared,
            self.bg,
            self.uploads,
            self.logs,
            self.run,
        )


def layout(config: Config) -> Layout:
    return Layout(config.app.root)
