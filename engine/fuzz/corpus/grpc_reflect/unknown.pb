
nope.proto