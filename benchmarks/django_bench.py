"""Django's approach, against Django's own floor, on SQLite (run in a subprocess).

``python -m benchmarks.django_bench --rows N --batch-size B --repeats R`` configures
Django standalone (``settings.configure``, a SQLite file in a temporary directory), and
measures, interleaved batch by batch exactly as the SQLAlchemy configurations are:

* floor: ``Model.objects.create()`` for each row of the batch inside
  ``transaction.atomic()``, no receiver;
* on_commit: the same, on a second model with a ``post_save`` receiver that registers a
  ``transaction.on_commit`` callback sending a Django signal to 3 no-op receivers — what
  Django's documentation recommends for "after the commit" side effects.

``create()`` per row is Django's path that sends ``post_save`` (``bulk_create`` sends no
signal), so both configurations use it. It prints one JSON object: seconds per
configuration per repeat, and Django's version. Django stays out of the main process.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from typing import Any

from .runner import run_interleaved

__all__ = ["main"]


def _setup(path: str) -> tuple[type[Any], type[Any]]:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}},
        INSTALLED_APPS=[],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import connection, models

    class UserFields(models.Model):
        email = models.CharField(max_length=200)
        name = models.CharField(max_length=100)
        is_active = models.BooleanField(default=True)
        created_at = models.DateTimeField(auto_now_add=True)

        class Meta:
            abstract = True
            app_label = "bench"

    class FloorUser(UserFields):
        class Meta:
            app_label = "bench"
            db_table = "bench_django_floor_user"

    class OnCommitUser(UserFields):
        class Meta:
            app_label = "bench"
            db_table = "bench_django_on_commit_user"

    with connection.schema_editor() as editor:
        editor.create_model(FloorUser)
        editor.create_model(OnCommitUser)
    return FloorUser, OnCommitUser


def _connect_receivers(model: type[Any]) -> None:
    from django.db import transaction
    from django.db.models.signals import post_save
    from django.dispatch import Signal

    user_registered = Signal()

    def noop(sender: Any, **kwargs: Any) -> None:
        return None

    for _ in range(3):
        # three distinct no-op receivers (Django keys receivers by identity)
        user_registered.connect(functools.partial(noop), weak=False)

    def on_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        if created:
            transaction.on_commit(
                functools.partial(user_registered.send, sender=sender, instance=instance)
            )

    post_save.connect(on_saved, sender=model, weak=False)


class _DjangoWorkload:
    def __init__(self, key: str, floor: str | None, model: type[Any], batch_size: int) -> None:
        self.key = key
        self.floor = floor
        self.model = model
        self.batch_size = batch_size

    def prepare(self, repeat: int, rows: int) -> None:
        self.model.objects.all().delete()

    def batch(self, index: int, repeat: int) -> None:
        from django.db import transaction

        start = index * self.batch_size
        create = self.model.objects.create
        with transaction.atomic():
            for i in range(start, start + self.batch_size):
                create(email=f"user{i}@example.com", name=f"User number {i}")


def main(argv: list[str] | None = None) -> None:
    """Run the Django configurations and print their times as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.django_bench")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=None,
                        help="time budget: no repeat beyond the third starts after it")
    args = parser.parse_args(argv)
    deadline = None if args.seconds is None else time.perf_counter() + args.seconds
    import django

    with tempfile.TemporaryDirectory(prefix="signalbus-bench-django-") as tmp:
        floor_model, on_commit_model = _setup(f"{tmp}/django.db")
        _connect_receivers(on_commit_model)
        workloads = [
            _DjangoWorkload("django-floor", None, floor_model, args.batch_size),
            _DjangoWorkload("django-on-commit", "django-floor", on_commit_model,
                            args.batch_size),
        ]
        result = run_interleaved(workloads, rows=args.rows, batch_size=args.batch_size,
                                 repeats=args.repeats, deadline=deadline)
        from django.db import connection

        connection.close()
    json.dump({"django": django.__version__, "totals": result.totals}, sys.stdout)


if __name__ == "__main__":
    main()
