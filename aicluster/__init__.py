"""aicluster: provision local AI inference clusters with pyinfra and prove they are ready."""
