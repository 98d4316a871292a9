"""An adapter whose import raises: its module-level code fails, as with a
missing configuration file. Used by badinput_test.go."""

raise ValueError("badinput: BADINPUT_CONFIG is not set; set it to the config file's path")
