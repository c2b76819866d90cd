"""`make cost`: what a million paid requests cost the operator in AWS, by part."""
