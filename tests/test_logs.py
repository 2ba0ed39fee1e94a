"""LogOnce: one line per condition while it lasts, and one more when it comes back."""

from __future__ import annotations

from typing import Any

from agent.logs import LogOnce


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **context: Any) -> None:
        self.lines.append(("warning", event, context))

    def info(self, event: str, **context: Any) -> None:
        self.lines.append(("info", event, context))


def test_a_condition_is_logged_once_while_it_lasts_and_again_after_a_reset() -> None:
    logger = RecordingLogger()
    once = LogOnce(logger)
    once.warning(("hung", "/nfs"), "statvfs_timeout", mount="/nfs")
    once.warning(("hung", "/nfs"), "statvfs_timeout", mount="/nfs")
    once.reset(("hung", "/nfs"))
    once.warning(("hung", "/nfs"), "statvfs_timeout", mount="/nfs")
    assert logger.lines == [("warning", "statvfs_timeout", {"mount": "/nfs"})] * 2


def test_a_new_variant_is_logged_and_a_reset_of_the_key_rearms_every_variant() -> None:
    logger = RecordingLogger()
    once = LogOnce(logger)
    once.warning("cpu", "collector_failed", variant="OSError", error="a")
    once.warning("cpu", "collector_failed", variant="OSError", error="b")
    once.warning("cpu", "collector_failed", variant="ValueError", error="c")
    once.reset("cpu")  # the key alone: the variants are not part of it
    once.warning("cpu", "collector_failed", variant="OSError", error="d")
    once.info("gpu0", "gpu_reading_not_supported")
    once.info("gpu0", "gpu_reading_not_supported")
    assert [(level, context) for level, _, context in logger.lines] == [
        ("warning", {"error": "a"}), ("warning", {"error": "c"}), ("warning", {"error": "d"}), ("info", {}),
    ]
