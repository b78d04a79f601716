"""signalbus's cost against the floor and against the approaches people use today.

Run with ``make bench`` (or ``python -m benchmarks``; ``--help`` lists the options).
Every configuration is measured in one run, interleaved batch by batch with the floor it
is compared to, and reported as the ratio of its time (or memory) to that floor's:

* ``workloads`` — the configurations (floor, tutorial ``after_insert`` listener,
  signalbus inline, unbound model, update binding with ``changed()``) as classes with
  a ``prepare()`` / ``batch()`` pair;
* ``runner`` — the interleaved, rotated, repeated loop and the ratio statistics;
* ``django_bench`` — Django's ``post_save`` + ``transaction.on_commit`` against
  Django's own floor, run in a subprocess so Django's settings stay out of this one;
* ``memory`` — the peak memory of one 100,000-row transaction, one fresh subprocess per
  configuration and measure;
* ``report`` — the Markdown table and ``benchmarks/results.md``;
* ``profile`` — one configuration under pyinstrument, for finding where time goes.

Nothing here asserts a timing: targets are reported as met or missed, never enforced.
"""
