"""The run folder: its record, the train workflow that fills it, the registry that reads many of them, and
what is written into it besides the weights.

    record.py        Run, resolve() (every command's run reference), the one reader/writer of run.json
    train.py         tuneforge.train(): output folder, data, model, engine, save
    lr_find.py       `tuneforge lr-find` (the range test itself lives in engine/lr_finder.py)
    lineage.py       run.json fields for lineage: host, parent run, resume history
    liveness.py      heartbeat thread and the effective status of a run recorded as running
    integrations.py  report_to package and hub token checked before training
    registry.py      list, summarise and compare runs under a root
    report.py        terminal tables (metrics, runs list/show/compare)
    outputs.py       after the weights: error analysis, lengths.json, baselines; report, card, push
    report_html.py   report.html
    model_card.py    README.md (Hugging Face model card)
    hub.py           push_to_hub of a curated file set

Importing this package imports none of its modules.
"""
