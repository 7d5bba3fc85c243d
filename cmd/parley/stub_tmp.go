package main

import (
	"context"
	"errors"
)

func chatCmd(ctx context.Context, args []string) error { return errors.New("todo") }
func bench(ctx context.Context, args []string) error   { return errors.New("todo") }
