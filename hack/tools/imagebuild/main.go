// Command imagebuild writes a container image tarball from static binaries,
// with go-containerregistry and no container engine. The image is
// reproducible: the same files give the same digest, because every header,
// timestamp and config field is fixed.
//
//	imagebuild -ref docker.io/flotilla/web:dev -o web.tar -entrypoint /web /web=bin/web
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	ref := flag.String("ref", "", "image reference to tag the tarball with (docker.io/flotilla/NAME:TAG)")
	out := flag.String("o", "", "tarball to write")
	entrypoint := flag.String("entrypoint", "", "absolute path of the program to run")
	flag.Parse()
	digest, err := build(*ref, *out, *entrypoint, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", *ref, digest)
}

func build(ref, out, entrypoint string, files []string) (v1.Hash, error) {
	if ref == "" || out == "" || entrypoint == "" || len(files) == 0 {
		return v1.Hash{}, errors.New("usage: imagebuild -ref REF -o OUT -entrypoint /PATH /PATH=FILE...")
	}
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := layerOf(files)
	if err != nil {
		return v1.Hash{}, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	// The Dockerfile's user (distroless nonroot): none of these programs needs root.
	cf.Config = v1.Config{Entrypoint: []string{entrypoint}, User: "65532:65532", WorkingDir: "/",
		Env: []string{"PATH=/"}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// layerOf puts each /PATH=FILE into one layer, executable, owned by root,
// dated at the epoch, in name order.
func layerOf(files []string) (v1.Layer, error) {
	sort.Strings(files)
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || !path.IsAbs(dst) {
			return nil, fmt.Errorf("%q: want /PATH=FILE", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	data := b.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
