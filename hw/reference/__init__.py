"""Reference designs that are not part of the accelerator: built only to be measured against it
(``fp8train report``)."""
