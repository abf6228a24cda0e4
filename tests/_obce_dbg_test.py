from test_app_search import *
def test_dbg(workspace, tokenizer, monkeypatch):
    source = _task_model(workspace / "task_models" / "tiny-sst2", tokenizer)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    print("EXC", [e.value for e in at.exception], [e.value for e in at.error])
    print("CAPS", [c.value[:80] for c in at.caption])
    print("WARN", [c.value[:200] for c in at.warning], [c.value[:200] for c in at.info])
