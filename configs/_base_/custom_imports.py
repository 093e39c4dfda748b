# Registers the lma_mmseg components (and its compatibility fixes) before
# mmengine builds anything: Config.fromfile imports the modules listed here,
# so mmseg's own tools/train.py and tools/test.py run these configs
# unchanged. Stated once: default_runtime.py inherits it (with
# default_scope), and the configs based on an mmseg:: config, whose runtime
# is mmseg's own (default_scope = 'mmseg' included), list it as a base.
custom_imports = dict(imports=['lma_mmseg'], allow_failed_imports=False)
