package atls.interop;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertPathValidator;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/** The contract's CERTS directory: trust anchor, own identity (optional), expected name. */
public final class Certs {
    public final X509Certificate ca;
    public final X509Certificate cert; // null when this end must not authenticate
    public final byte[] certDer, keyDer; // PKCS#8 DER
    public final String serverName;

    private Certs(X509Certificate ca, X509Certificate cert, byte[] certDer, byte[] keyDer, String serverName) {
        this.ca = ca;
        this.cert = cert;
        this.certDer = certDer;
        this.keyDer = keyDer;
        this.serverName = serverName;
    }

    public static Certs load(String dir) throws IOException, GeneralSecurityException {
        if (dir == null || dir.isEmpty()) throw new IOException("CERTS is not set");
        Path d = Path.of(dir);
        X509Certificate ca = parse(Files.readAllBytes(d.resolve("ca.der")));
        X509Certificate cert = null;
        byte[] certDer = null, keyDer = null;
        if (Files.exists(d.resolve("cert.der"))) {
            certDer = Files.readAllBytes(d.resolve("cert.der"));
            keyDer = Files.readAllBytes(d.resolve("key.der"));
            cert = parse(certDer);
        }
        Path name = d.resolve("server-name");
        String serverName = Files.exists(name) ? Files.readString(name, StandardCharsets.UTF_8).trim() : null;
        return new Certs(ca, cert, certDer, keyDer, serverName);
    }

    public boolean hasIdentity() {
        return cert != null;
    }

    public PrivateKey privateKey() throws GeneralSecurityException {
        return KeyFactory.getInstance("EC").generatePrivate(new PKCS8EncodedKeySpec(keyDer));
    }

    public static X509Certificate parse(byte[] der) throws CertificateException {
        return (X509Certificate) CertificateFactory.getInstance("X.509")
            .generateCertificate(new ByteArrayInputStream(der));
    }

    /**
     * PKIX-validate a peer chain (leaf first) against our one trust anchor, and
     * when {@code name} is given, check it against the leaf's subjectAltName
     * (for stacks that leave certificate checks to the application).
     */
    public void verifyPeer(List<X509Certificate> chain, String name) throws GeneralSecurityException {
        if (chain.isEmpty()) throw new CertificateException("the peer sent no certificate");
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        PKIXParameters params = new PKIXParameters(Set.of(new TrustAnchor(ca, null)));
        params.setRevocationEnabled(false); // a test PKI has no CRLs or OCSP
        CertPathValidator.getInstance("PKIX").validate(cf.generateCertPath(chain), params);
        if (name != null && !matchesName(chain.get(0), name)) {
            throw new CertificateException("certificate does not name " + name);
        }
    }

    private static boolean matchesName(X509Certificate leaf, String name) throws CertificateException {
        Collection<List<?>> sans = leaf.getSubjectAlternativeNames();
        if (sans == null) return false;
        for (List<?> san : sans) {
            int type = (Integer) san.get(0);
            String value = String.valueOf(san.get(1));
            // 2 = dNSName (exact, case-insensitive; the test PKI has no wildcards), 7 = iPAddress
            if ((type == 2 && value.toLowerCase(Locale.ROOT).equals(name.toLowerCase(Locale.ROOT)))
                || (type == 7 && value.equals(name))) return true;
        }
        return false;
    }
}
